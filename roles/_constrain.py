"""Constrained output: the JSON schemas the roles decode under, and how a constrained
reply is read back into the familiar text form.

Where a role needs a parseable reply (a verdict and score, a router's decision, the short
final answer of a multiple-choice or math task) it asks its backend to decode under a
JSON schema, so a small model cannot answer in a shape the parsers miss. The node's
``constrained`` param decides: None (the default) constrains when the backend applies
JSON schemas, True always (a backend that cannot fails the call), False never. Code and
free-text answers are never constrained: their shape is the answer.

A schema puts ``reasoning`` first so the model thinks before it commits, and bounds its
length by the call's ``max_tokens`` so the object closes before the reply is cut. The
reply is rendered back as text ("<reasoning>\\n\\nAnswer: B"), which is what successors'
prompts and the text parsers have always seen; a reply that is not the object asked for
(cut short, say) falls back to those parsers, with ``parse_error`` saying so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from agentgraph import NodeContext, OutputConstraint, Role, Sampling, TaskKind
from agentgraph._tasks import LETTERS

from ._parse import (
    Judgement,
    Parsed,
    extract_answer,
    parse_choice,
    parse_json_reply,
    parse_verdict,
)

__all__ = [
    "ConstrainedParams",
    "answer_constraint",
    "answer_schema",
    "choice_schema",
    "read_answer",
    "read_choice",
    "read_verdict",
    "use_constraint",
    "verdict_schema",
]

# Tokens the JSON around the reasoning takes (braces, keys, quotes, the answer fields),
# kept free of reasoning so the object closes within max_tokens.
_JSON_OVERHEAD_TOKENS = 40
# Tokens run about 3-4 characters; 2 per token leaves room for text that tokenizes badly.
_CHARS_PER_TOKEN = 2
_MIN_REASONING_CHARS = 16
# llama.cpp's grammar parser refuses a string bounded much past 1,000 characters ("number
# of rules that are going to be repeated ... exceeds sane defaults", measured with
# llama-cpp-python 0.3.36 between 1,000 and 1,200): past that, reasoning is cut at 1,000.
_MAX_REASONING_CHARS = 1000
_MAX_ANSWER_CHARS = 100  # a math answer: a number or a short expression


class ConstrainedParams(pydantic.BaseModel):
    """Params of a role that may constrain its model's output."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    constrained: bool | None = None
    """None: constrain when the backend applies JSON schemas; True: always (the call
    fails on a backend that cannot); False: never."""


def use_constraint(role: Role, ctx: NodeContext) -> bool:
    """Whether ``role`` asks for constrained output on this node (see
    :class:`ConstrainedParams`)."""
    setting: bool | None = getattr(role.params, "constrained", None)
    if setting is None:
        return "json_schema" in ctx.constraints
    return setting


def _reasoning(sampling: Sampling) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string"}
    if sampling.max_tokens is not None:
        room = _CHARS_PER_TOKEN * (sampling.max_tokens - _JSON_OVERHEAD_TOKENS)
        prop["maxLength"] = min(_MAX_REASONING_CHARS, max(_MIN_REASONING_CHARS, room))
    return prop


def _object(properties: dict[str, Any]) -> OutputConstraint:
    return OutputConstraint(
        json_schema={
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }
    )


def answer_schema(
    task: TaskKind, choices: Sequence[str] | None, sampling: Sampling
) -> OutputConstraint | None:
    """``{"reasoning", "answer"}`` for the tasks with a short answer: an option letter
    (one per known choice, else A-J) or a one-line math answer. None for code and text."""
    if task == "multiple_choice":
        letters = LETTERS[: len(choices)] if choices else LETTERS[:10]
        answer: dict[str, Any] = {"enum": list(letters)}
    elif task == "math":
        answer = {"type": "string", "minLength": 1, "maxLength": _MAX_ANSWER_CHARS}
    else:
        return None
    return _object({"reasoning": _reasoning(sampling), "answer": answer})


def answer_constraint(role: Role, ctx: NodeContext) -> OutputConstraint | None:
    """The constraint of an answering role's reply on this node (proposer, synthesizer):
    :func:`answer_schema` when the node constrains, else None."""
    if not use_constraint(role, ctx):
        return None
    return answer_schema(ctx.task, ctx.choices, ctx.sampling)


def verdict_schema(sampling: Sampling) -> OutputConstraint:
    """``{"reasoning", "verdict": "correct" | "incorrect", "score": 0..1}``."""
    return _object(
        {
            "reasoning": _reasoning(sampling),
            "verdict": {"enum": ["correct", "incorrect"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
        }
    )


def choice_schema(options: Sequence[str]) -> OutputConstraint:
    """``{"decision": <one of options>}``: a one-word choice needs no reasoning."""
    return _object({"decision": {"enum": list(options)}})


def _schema(constraint: OutputConstraint) -> Mapping[str, Any]:
    assert constraint.json_schema is not None
    return constraint.json_schema


def _fell_back(json_error: str | None, text_error: str | None) -> str:
    """A constrained reply that is not the object asked for is noted even when the text
    parser then finds the answer: the constraint did not hold."""
    note = f"constrained reply unreadable as JSON: {json_error}"
    return f"{note}; {text_error}" if text_error else note


def _with_reasoning(reasoning: str, tail: str) -> str:
    reasoning = reasoning.strip()
    return f"{reasoning}\n\n{tail}" if reasoning else tail


def read_answer(
    text: str, task: TaskKind, choices: Sequence[str] | None, constraint: OutputConstraint
) -> tuple[str, Parsed[str]]:
    """The reply rendered as "<reasoning>\\n\\nAnswer: <answer>" and the answer the task's
    parser reads in it (a math answer in canonical form); a reply that is not the object
    falls back to the parser on the raw text."""
    obj = parse_json_reply(text, _schema(constraint))
    if obj.value is None:
        parsed = extract_answer(text, task, choices)
        return text, Parsed(parsed.value, _fell_back(obj.error, parsed.error))
    answer = " ".join(str(obj.value["answer"]).split())
    rendered = _with_reasoning(obj.value["reasoning"], f"Answer: {answer}")
    return rendered, extract_answer(rendered, task, choices)


def read_verdict(text: str, constraint: OutputConstraint) -> tuple[str, Parsed[Judgement]]:
    """The reply rendered as "<reasoning>\\nVerdict: correct\\nScore: 0.9" and the
    judgement (score clamped to [0, 1]); else the text parser's reading of the raw text."""
    obj = parse_json_reply(text, _schema(constraint))
    if obj.value is None:
        parsed = parse_verdict(text)
        return text, Parsed(parsed.value, _fell_back(obj.error, parsed.error))
    verdict = obj.value["verdict"]
    score = min(1.0, max(0.0, float(obj.value["score"])))
    reasoning = obj.value["reasoning"].strip()
    tail = f"Verdict: {verdict}\nScore: {score:g}"
    rendered = f"{reasoning}\n{tail}" if reasoning else tail
    return rendered, Parsed(Judgement(verdict == "correct", score))


def read_choice(
    text: str, options: Sequence[str], default: str, constraint: OutputConstraint
) -> tuple[str, Parsed[str]]:
    """The decision rendered as the one word it is, or the text parser's reading of the
    raw reply (``default`` when it finds none)."""
    obj = parse_json_reply(text, _schema(constraint))
    if obj.value is None:
        parsed = parse_choice(text, options, default)
        return text, Parsed(parsed.value, _fell_back(obj.error, parsed.error))
    decision: str = obj.value["decision"]
    return decision, Parsed(decision)
