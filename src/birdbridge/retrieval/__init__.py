"""Embedding stores, FAISS indexes and search."""
