"""Backends for real models, found by the core through the ``agentgraph.backends`` entry
points. Each heavy dependency is imported only when its backend first loads a model.

- ``llama_cpp``: local GGUF files in process (extra ``llama``).
- ``openai``: any OpenAI-compatible chat server, through the ``openai`` client (extra ``openai``).
- ``http``: any JSON-over-HTTP endpoint, described by a request template and response paths.
"""

from ._http import HttpBackend
from ._llama_cpp import LlamaCppBackend, LlamaOptions
from ._openai_compat import OpenAIBackend

__all__ = ["HttpBackend", "LlamaCppBackend", "LlamaOptions", "OpenAIBackend"]
