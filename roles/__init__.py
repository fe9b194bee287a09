"""Role implementations, found by the core through the ``agentgraph.roles`` entry points.

- ``proposer``: answers the question (optionally with its inputs as context).
- ``synthesizer``: reads the candidate answers of its inputs and writes one final answer.
"""

from ._proposer import Proposer
from ._synthesizer import Synthesizer

__all__ = ["Proposer", "Synthesizer"]
