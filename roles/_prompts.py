"""Default prompts of the LLM roles, per task kind.

Written for small local models: short, one instruction per sentence, and the output
format stated last in the system prompt, right before the question. A node's
``prompt``/``system`` in YAML replaces these; ``system: ""`` sends no system message.

When a role constrains its reply to a JSON object (see ``_constrain``), the default
system prompt names the object's fields instead of the text format, in the order the
schema fixes them: a model told one format and forced into another writes worse answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentgraph import TaskKind

__all__ = ["VARIANTS", "Prompt", "default_prompt"]

LLMRole = Literal["proposer", "critic", "verifier", "synthesizer", "router"]


@dataclass(frozen=True, slots=True)
class Prompt:
    system: str
    user: str


_FORMAT: dict[TaskKind, str] = {
    "math": "Give the exact answer as a number on a last line 'Answer: <number>'.",
    "multiple_choice": "Give the letter of the correct option on a last line 'Answer: <letter>'.",
    "code": "Reply with a single fenced Python code block: ```python ... ```.",
    "text": "Answer clearly and briefly.",
}

# Only the tasks whose answers are constrained (answer_schema in _constrain).
_JSON_FORMAT: dict[TaskKind, str] = {
    "math": (
        'Reply with a JSON object: "reasoning" (your brief working) first, then "answer" '
        "(the exact final answer, a number)."
    ),
    "multiple_choice": (
        'Reply with a JSON object: "reasoning" (brief) first, then "answer" (the letter of '
        "the correct option)."
    ),
}

_SOLVER: dict[TaskKind, str] = {
    "math": "You solve math problems. Think step by step, briefly.",
    "multiple_choice": "You answer multiple-choice questions. Think briefly.",
    "code": "You are a careful Python programmer.",
    "text": "You answer questions accurately.",
}

_CRITIC_FOCUS: dict[TaskKind, str] = {
    "math": "Check each calculation and the final number.",
    "multiple_choice": "Check whether the chosen option really is the correct one.",
    "code": "Look for bugs, wrong results and missed edge cases.",
    "text": "Check the facts, the reasoning and whether the question is fully answered.",
}

_VERIFIER_FOCUS: dict[TaskKind, str] = {
    "math": "Work the problem out yourself before you judge.",
    "multiple_choice": "Decide which option is correct before you judge.",
    "code": "Trace the code on a small example before you judge.",
    "text": "Check the facts before you judge.",
}

_DIFFICULTY: dict[TaskKind, str] = {
    "math": "Easy: one or two arithmetic steps. Hard: several steps, algebra or proofs.",
    "multiple_choice": "Easy: common knowledge. Hard: expert knowledge or several steps.",
    "code": "Easy: a few lines, no tricky cases. Hard: algorithms, edge cases, many parts.",
    "text": "Easy: one short fact. Hard: explanations, analysis or several facts.",
}

VARIANTS: dict[LLMRole, tuple[str, ...]] = {
    "proposer": ("plain", "context", "revise"),
    "critic": ("plain", "others"),
    "verifier": ("plain",),
    "synthesizer": ("plain", "critiques"),
    "router": ("plain",),
}
"""Which default prompts each role has; a role picks one by what its inputs carry."""


def _shown(task: TaskKind) -> str:
    if task == "code":
        return "Proposed code:\n```python\n{answer}\n```"
    return "Proposed answer: {answer}"


def _format(task: TaskKind, constrained: bool) -> str:
    return _JSON_FORMAT.get(task, _FORMAT[task]) if constrained else _FORMAT[task]


def _proposer(task: TaskKind, variant: str, constrained: bool) -> Prompt:
    system = f"{_SOLVER[task]} {_format(task, constrained)}"
    if variant == "context":
        return Prompt(system, "{question}\n\nOther answers to consider:\n{context}")
    if variant == "revise":
        user = (
            "{question}\n\nPrevious answer:\n{context}\n\nCritique:\n{critiques}\n\n"
            "Write an improved answer."
        )
        return Prompt(system, user)
    return Prompt(system, "{question}")


def _critic(task: TaskKind, variant: str, constrained: bool) -> Prompt:
    system = (
        f"You review answers and point out mistakes. Be brief and specific. {_CRITIC_FOCUS[task]}"
    )
    others = "\n\nOther answers, for comparison:\n{others}" if variant == "others" else ""
    user = (
        f"Question: {{question}}\n\n{_shown(task)}{others}\n\nWhat is wrong with it, if anything?"
    )
    return Prompt(system, user)


def _verifier(task: TaskKind, variant: str, constrained: bool) -> Prompt:
    reply = (
        'Reply with a JSON object: "reasoning" (brief) first, then "verdict" ("correct" or '
        '"incorrect") and "score" (a number from 0 to 1: how likely the answer is correct).'
        if constrained
        else "Reply with two lines:\nVerdict: correct or incorrect\n"
        "Score: <a number from 0 to 1: how likely the answer is correct>"
    )
    system = f"You check whether an answer is correct. {_VERIFIER_FOCUS[task]} {reply}"
    return Prompt(system, f"Question: {{question}}\n\n{_shown(task)}\n\nIs it correct?")


def _synthesizer(task: TaskKind, variant: str, constrained: bool) -> Prompt:
    system = (
        "You combine the answers of several assistants into one final answer. Prefer the "
        f"best-supported answer and fix mistakes you can see. {_format(task, constrained)}"
    )
    critiques = "\n\nCritiques:\n{critiques}" if variant == "critiques" else ""
    user = (
        f"Question: {{question}}\n\nCandidate answers:\n{{candidates}}{critiques}\n\n"
        "Write the best final answer."
    )
    return Prompt(system, user)


def _router(task: TaskKind, variant: str, constrained: bool) -> Prompt:
    reply = (
        # Doubled braces: the system prompt is a template, rendered with str.format.
        'Reply with a JSON object: {{"decision": "easy"}} or {{"decision": "hard"}}.'
        if constrained
        else "Reply with one word: easy or hard."
    )
    system = (
        f"You judge how hard a question is for a small language model. {_DIFFICULTY[task]} {reply}"
    )
    return Prompt(system, "Question: {question}\n\nIs this question easy or hard?")


_BUILDERS = {
    "proposer": _proposer,
    "critic": _critic,
    "verifier": _verifier,
    "synthesizer": _synthesizer,
    "router": _router,
}


def default_prompt(
    role: LLMRole, task: TaskKind, variant: str = "plain", *, constrained: bool = False
) -> Prompt:
    """The default system and user templates of ``role`` for ``task``; ``constrained``:
    the reply is decoded under the role's JSON schema, so the system prompt asks for its
    fields (roles and tasks without a schema keep their text format)."""
    if variant not in VARIANTS[role]:
        valid = ", ".join(repr(v) for v in VARIANTS[role])
        raise ValueError(f"unknown prompt variant {variant!r} for {role!r}; valid: {valid}")
    return _BUILDERS[role](task, variant, constrained)
