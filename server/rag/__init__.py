"""Retrieval: load documents, chunk by tokens, embed, FAISS index + SQLite chunk store, search.

Heavy libraries (torch, sentence-transformers, FAISS) are imported only when an embedder or
index is actually used, so importing ``server.rag`` is cheap.
"""
