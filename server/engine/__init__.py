"""Inference engine: continuous batching over one llama.cpp context (see docs/engine.md).

``types`` is the protocol the HTTP layer speaks; ``llama_engine.LlamaEngine`` implements it.
Nothing is imported here so that importing the protocol never loads llama.cpp.
"""
