"""An OpenAI-compatible video chat endpoint over the runtime pipeline (FastAPI), and its Ray
Serve scale-out. Imports the runtime; the runtime never imports this package."""
