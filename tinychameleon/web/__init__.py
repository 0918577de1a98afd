"""The web interface: a FastAPI app (JSON API + one static page) on top of the Pipeline."""
