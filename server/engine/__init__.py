"""Inference engine: continuous batching over one llama.cpp context (see docs/engine.md).

``types`` is the protocol the HTTP layer speaks; ``llama_engine.LlamaEngine`` implements it.
llama.cpp itself is not imported here, so importing the protocol stays light; only the OpenMP
spin policy is set, because libgomp reads it once, when llama.cpp is first loaded.
"""

from server.engine.threads import apply_openmp_defaults

apply_openmp_defaults()
