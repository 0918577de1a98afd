"""Retrieval as in CM3Leon: a small CLIP trained here (clip.py, retriever.py) and a faiss index over a
memory bank of documents (index.py, memory.py)."""
