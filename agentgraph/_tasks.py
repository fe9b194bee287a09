"""Tasks and task sets: what a graph is evaluated on.

A :class:`Task` is one item (question, optional choices, gold answer, unit tests for
code). A :class:`TaskSet` is a named list of tasks of one kind (the graph's ``task``:
``math``, ``multiple_choice``, ``code`` or ``text``).

Splits are assigned by a stable hash of each task's id — ``train`` 60%, ``val`` 20%,
``test`` 20% — so adding items to a set never moves old ones between splits. A reference
such as ``gsm8k:test[:50]`` names a set (a built-in benchmark, or a ``.jsonl`` / ``.csv``
file), a split (``all`` when left out) and a Python slice over that split, in the set's
own order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ._errors import TaskError
from ._spec import TaskKind

__all__ = [
    "SCORERS",
    "SPLITS",
    "Scored",
    "ScorerName",
    "Split",
    "Task",
    "TaskSet",
    "parse_task_ref",
    "split_of",
]

Split = Literal["train", "val", "test", "all"]
ScorerName = Literal["numeric", "math", "choice", "code", "exact"]
SCORERS: tuple[ScorerName, ...] = ("numeric", "math", "choice", "code", "exact")
DEFAULT_SCORER: Mapping[TaskKind, ScorerName] = {
    "math": "math",
    "multiple_choice": "choice",
    "code": "code",
    "text": "exact",
}
SPLITS: tuple[Split, ...] = ("train", "val", "test", "all")
_SHARES: tuple[tuple[Split, int], ...] = (("train", 60), ("val", 80), ("test", 100))
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class Task:
    """One item to answer.

    - ``answer``: the gold answer as text (a number, a LaTeX expression, a choice letter,
      free text); None for code, which is judged by ``tests``.
    - ``choices``: the options of a multiple-choice question, in order (letter A first);
      the gold ``answer`` is then a letter.
    - ``tests`` and ``entry_point``: for code, a Python test program run against the
      answer (it may call ``check(entry_point)``), and the function it must define.
    """

    id: str
    question: str
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    tests: str | None = None
    entry_point: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The question as a graph receives it: with lettered options when it has any."""
        if not self.choices:
            return self.question
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
        return f"{self.question}\n{options}"

    @property
    def split(self) -> Split:
        return split_of(self.id)


def split_of(task_id: str) -> Split:
    """The split a task id falls in: a stable hash, independent of the other items."""
    bucket = int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest()) % 100
    return next(name for name, upto in _SHARES if bucket < upto)  # cumulative percentages


@dataclass(frozen=True, slots=True)
class Scored:
    """A scorer's judgement of one final answer: ``score`` in [0, 1], the answer it
    ``extracted`` from the text (None: it found none), and why it is not 1 (``reason``)."""

    score: float
    extracted: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TaskSet(Sequence[Task]):
    """Tasks of one kind, in the set's own order. ``name`` says where they came from
    (the reference they were loaded by, e.g. ``gsm8k:test[:50]``); ``scorer`` names how
    answers are judged (None: the default of the kind)."""

    name: str
    kind: TaskKind
    tasks: tuple[Task, ...]
    scorer: ScorerName | None = None

    @property
    def scorer_name(self) -> ScorerName:
        return self.scorer if self.scorer is not None else DEFAULT_SCORER[self.kind]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for t in self.tasks:
            if t.id in seen:
                raise TaskError(f"duplicate task id {t.id!r}", source=self.name, field="id")
            seen.add(t.id)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return replace(self, tasks=self.tasks[index])
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def split(self, name: Split) -> TaskSet:
        """The tasks of one split (``all``: every task), in order."""
        if name not in SPLITS:
            raise TaskError(f"unknown split {name!r}; valid splits: {', '.join(map(repr, SPLITS))}")
        if name == "all":
            return self
        return replace(self, tasks=tuple(t for t in self.tasks if t.split == name))


_REF = re.compile(
    r"^(?P<set>.+?)(?::(?P<split>[A-Za-z]+))?(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$"
)


def parse_task_ref(ref: str) -> tuple[str, Split, slice]:
    """``name[:split][[start:stop]]`` -> (name, split, slice). A set name may itself
    contain ``/`` (``mmlu/high_school_physics``) or be a file path."""
    m = _REF.match(ref.strip())
    if m is None or not m["set"]:
        raise TaskError(
            f"bad task reference {ref!r}; expected NAME[:SPLIT][[START:STOP]], "
            "e.g. 'gsm8k:test[:50]' or 'my_tasks.jsonl:val'"
        )
    split = m["split"] or "all"
    if split not in SPLITS:
        raise TaskError(
            f"bad task reference {ref!r}: unknown split {split!r}; "
            f"valid splits: {', '.join(map(repr, SPLITS))}"
        )
    start = int(m["start"]) if m["start"] else None
    stop = int(m["stop"]) if m["stop"] else None
    return m["set"], split, slice(start, stop)
