"""Backends for real models, found by the core through the ``agentgraph.backends`` entry
points. Each heavy dependency is imported only when its backend first loads a model.

- ``llama_cpp``: local GGUF files in process (extra ``llama``).
"""

from ._llama_cpp import LlamaCppBackend, LlamaOptions

__all__ = ["LlamaCppBackend", "LlamaOptions"]
