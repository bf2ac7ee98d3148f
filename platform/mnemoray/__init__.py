"""mnemoray: persona-aware long-term memory for LLM agents on Ray."""

__version__ = "0.1.0"
