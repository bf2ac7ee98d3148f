"""Ray Serve applications: the OpenAI-compatible LLM endpoint (`llm_app`)."""
