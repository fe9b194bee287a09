from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import pydantic

from agentgraph import GraphValidationError, Message, NodeContext, NodeSpec, Role
from agentgraph._errors import did_you_mean

from ._common import ask, candidates, origin, reject_prompts, require_inputs, score_of
from ._constrain import choice_schema, read_choice, use_constraint
from ._parse import parse_choice

Mode = Literal["score", "difficulty"]
_OUTCOMES: dict[Mode, tuple[str, str]] = {"score": ("pass", "fail"), "difficulty": ("easy", "hard")}


class RouterParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    mode: Mode = "score"
    threshold: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)
    pass_: tuple[str, ...] = pydantic.Field(default=(), alias="pass")
    fail: tuple[str, ...] = ()
    easy: tuple[str, ...] = ()
    hard: tuple[str, ...] = ()
    constrained: bool | None = None

    def targets(self, outcome: str) -> tuple[str, ...]:
        return self.pass_ if outcome == "pass" else tuple(getattr(self, outcome))


class Router(Role):
    """Activates some of its successors and skips the others.

    ``mode: score`` (no model): reads the highest ``score`` among its inputs (verifiers)
    and activates ``pass`` when it is at least ``threshold``, else ``fail``; the message's
    ``score`` is the score it compared and ``data["threshold"]`` the threshold. With no
    score among its inputs it counts 0 (``score`` stays None, ``parse_error`` says why).
    ``mode: difficulty`` (needs ``model``): asks the model whether the question is easy or
    hard and activates ``easy`` or ``hard``; an unreadable reply counts as hard. Its reply
    is constrained to ``{"decision": "easy" | "hard"}`` (param ``constrained``, see
    ``agentgraph.roles``); the message's ``text`` is then the decision.
    The message passes on the best-scored (or first) input answer (``candidate``), with
    ``decision`` (the outcome) and ``routes`` set. Every successor must be listed under an
    outcome, or it could never run.
    """

    model_use: ClassVar[Literal["required", "optional", "none"]] = "optional"
    placeholders: ClassVar[frozenset[str]] = frozenset({"question"})
    Params = RouterParams

    def __init__(self, node: str, spec: NodeSpec) -> None:
        super().__init__(node, spec)
        assert isinstance(self.params, RouterParams)
        self.routing = self.params
        self._check_mode()
        self._check_targets()

    def _error(self, message: str, *path: str | int) -> GraphValidationError:
        return GraphValidationError(message, path=("nodes", self.node, *path))

    def _check_mode(self) -> None:
        mode, spec = self.routing.mode, self.spec
        outcomes = _OUTCOMES[mode]
        takes = ("threshold", *outcomes) if mode == "score" else (*outcomes, "constrained")
        foreign = [k for k in spec.params if k not in ("mode", *takes)]
        if foreign:
            raise self._error(
                f"{foreign[0]!r} does not apply to mode {mode!r}; it takes: {', '.join(takes)}",
                "params",
                foreign[0],
            )
        if not any(self.routing.targets(o) for o in outcomes):
            raise self._error(
                f"router {self.node!r} activates no successor; list successors under "
                f"{outcomes[0]!r} and {outcomes[1]!r}",
                "params",
            )
        if mode == "difficulty" and spec.model is None:
            raise self._error(
                "mode 'difficulty' asks a model whether the question is easy or hard; set 'model'",
                "model",
            )
        if mode == "score":
            if spec.model is not None:
                why = f"mode 'score' calls no model; remove 'model' ({spec.model!r})"
                raise self._error(why + " or use mode 'difficulty'", "model")
            reject_prompts(self.node, spec)
            require_inputs(self.node, spec, "in mode 'score' reads the scores of its inputs")

    def _check_targets(self) -> None:
        for outcome in _OUTCOMES[self.routing.mode]:
            targets = self.routing.targets(outcome)
            for i, name in enumerate(targets):
                why = None
                if name == self.node:
                    why = "a router cannot activate itself"
                elif name in self.spec.inputs:
                    why = f"{name!r} is an input of {self.node!r}, not a successor"
                elif name in targets[:i]:
                    why = f"{name!r} is listed twice"
                if why:
                    raise self._error(why, "params", outcome, i)

    def check_successors(self, successors: Sequence[str]) -> None:
        """Graph-level check, given the nodes that list this router as an input."""
        outcomes = _OUTCOMES[self.routing.mode]
        for outcome in outcomes:
            for i, name in enumerate(self.routing.targets(outcome)):
                if name not in successors:
                    hint = did_you_mean(name, successors)
                    valid = ", ".join(repr(s) for s in successors) or "(none)"
                    why = f"{name!r} is not a successor of {self.node!r}; successors: {valid}"
                    raise self._error(why + hint, "params", outcome, i)
        listed = {name for outcome in outcomes for name in self.routing.targets(outcome)}
        for name in successors:
            if name not in listed:
                why = f"successor {name!r} is listed under neither {' nor '.join(outcomes)}"
                raise self._error(why + ", so it would never run", "params")

    async def run(self, ctx: NodeContext, inputs: Sequence[Message]) -> Message:
        data: dict[str, Any] = {}
        carried = candidates(inputs)
        score: float | None = None
        error: str | None = None
        if self.routing.mode == "score":
            scored = [(m, s) for m in inputs if m.ok and (s := score_of(m)) is not None]
            if scored:
                best, score = max(scored, key=lambda pair: pair[1])  # first of equals
                carried = [best]
            else:
                names = ", ".join(repr(m.node) for m in inputs)
                error = f"expected a score on an input (a verifier); inputs: {names}"
            # No score reads as 0 for the decision, but is not passed on as one: a later
            # best_of or router would take it for a verifier's judgement.
            compared = 0.0 if score is None else score
            decision = "pass" if compared >= self.routing.threshold else "fail"
            relation = ">=" if decision == "pass" else "<"
            text = (
                f"score {compared:.2f} {relation} threshold {self.routing.threshold:g}: {decision}"
            )
            data["threshold"] = self.routing.threshold
        else:
            options = _OUTCOMES["difficulty"]
            values = {"question": ctx.question}
            if use_constraint(self, ctx):
                constraint = choice_schema(options)
                reply = await ask(self, ctx, "router", "plain", values, constraint)
                text, parsed = read_choice(reply, options, "hard", constraint)
            else:
                text = await ask(self, ctx, "router", "plain", values)
                parsed = parse_choice(text, options, default="hard")
            decision, error = parsed.value, parsed.error
        return Message(
            self.node,
            self.spec.role,
            text,
            carried[0].answer if carried else None,
            data=data,
            routes=frozenset(self.routing.targets(decision)),
            candidate=origin(carried[0]) if carried else None,
            score=score,
            decision=decision,
            parse_error=error,
        )
