"""Retrieval building blocks: embeddings, FAISS vector index, BM25, rank fusion."""
