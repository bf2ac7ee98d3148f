"""LLM engines behind one interface (see `mnemoray.llm.types`)."""
