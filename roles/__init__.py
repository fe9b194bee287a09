"""Role implementations, found by the core through the ``agentgraph.roles`` entry points.

LLM roles (default prompts per graph ``task``: text, math, multiple_choice, code):

- ``proposer`` (:class:`Proposer`): answers the question; with inputs, sees their answers;
  with critic inputs, revises the criticised answer.
- ``critic`` (:class:`Critic`): critiques its input's answer (``critique``) and passes
  that answer on.
- ``verifier`` (:class:`Verifier`): judges its input's answer (``verdict``, ``score`` in
  [0, 1]) and passes it on.
- ``synthesizer`` (:class:`Synthesizer`): combines its inputs' answers and critiques.
- ``router`` (:class:`Router`): activates some successors: by verifier score against a
  threshold (no model), or by a model's easy/hard call on the question.

Model-free aggregators:

- ``vote`` (:class:`MajorityVote`): majority over normalised answers.
- ``best_of`` (:class:`BestOf`): the answer with the highest verifier score.
- ``first_finish`` (:class:`FirstFinish`): the first successful input; cancels the rest.
- ``select`` (:class:`Select`): the last (or first) successful input; joins router branches.

Roles write their results to the typed fields of :class:`agentgraph.Message`: ``answer``;
``candidate`` (the node whose answer a critic, verifier, router or aggregator passes on;
``Message.origin`` resolves it); ``critique``; ``verdict`` and ``score``; ``decision`` and
``routes`` (routers); ``parse_error``. ``data`` holds only free-form extras: ``winner``
(the input an aggregator chose), ``votes`` and ``agreement`` (vote), ``scores`` (best_of),
``threshold`` (router).

Parsers (answers, verdicts, choices) live in ``agentgraph.roles._parse``; they never
raise on model output, and roles record what they could not read in ``parse_error``.

Constrained output: where a reply must be parseable (the verifier's verdict and score, a
difficulty router's decision, the final answer of proposers and synthesizers on
multiple_choice and math tasks) a role decodes it under a JSON schema, reasoning first
(``agentgraph.roles._constrain``). Param ``constrained``: unset, when the node's backend
applies JSON schemas (``NodeContext.constraints``); ``true``, always (the call fails on a
backend that cannot); ``false``, never. The reply is rendered back as the text the
parsers read ("...\\n\\nAnswer: B", "Verdict: correct\\nScore: 0.9"); a reply that is not
the object (cut by ``max_tokens``) falls back to the parsers, noted in ``parse_error``.

A role can be unit-tested without a graph, on a :class:`agentgraph.NodeContext` with a
scripted model::

    ctx = NodeContext("What is 2 + 2?", task="math", backend=ScriptedBackend("Answer: 4"))
    msg = await Proposer("p", NodeSpec(role="proposer", model="m")).run(ctx, [])
    assert msg.answer == "4"
"""

from ._best_of import BestOf
from ._critic import Critic
from ._first_finish import FirstFinish
from ._proposer import Proposer
from ._router import Router
from ._select import Select
from ._synthesizer import Synthesizer
from ._verifier import Verifier
from ._vote import MajorityVote

__all__ = [
    "BestOf",
    "Critic",
    "FirstFinish",
    "MajorityVote",
    "Proposer",
    "Router",
    "Select",
    "Synthesizer",
    "Verifier",
]
