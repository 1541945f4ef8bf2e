"""attnlab serve: an OpenAI-compatible HTTP server (FastAPI + uvicorn) for every model family
attnlab loads."""
