"""Tuning end to end: a space of graphs on scripted models, evaluated on real task records;
the store resumes a search exactly, also after kill -9 of a real ``agentgraph tune``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agentgraph.search import load_space
from agentgraph.search._objective import Objective, SearchBudget
from agentgraph.search._reinforce import Reinforce
from agentgraph.search._tune import atune

import agentgraph as ag

ROOT = Path(__file__).resolve().parent.parent

# Two scripted models: "good" answers right, "bad" wrong; "good" is slower. A proposer
# answers by its model; a search should learn to prefer "good" under a loose budget.
SPACE = """
schema: agentgraph-space/v1
name: toy
task: math
models:
  good: {{backend: scripted, options: {{responses: "Answer: 4", latency_s: {good}}}}}
  bad: {{backend: scripted, options: {{responses: "Answer: 5", latency_s: {bad}}}}}
defaults:
  sampling: {{max_tokens: 8}}
budget: {{latency_s: 30}}
layered:
  width: [1, 2, 3]
  rounds: [0]
  aggregator: [vote]
  models:
    proposer: [good, bad]
"""


def write_space(tmp_path: Path, good: float = 0.0, bad: float = 0.0) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.format(good=good, bad=bad))
    return path


def tasks(n: int = 12) -> ag.TaskSet:
    items = tuple(ag.Task(f"t{i}", f"What is {i} + 4 - {i}?", answer="4") for i in range(n))
    return ag.TaskSet("toy", "math", items, scorer="numeric")


def searcher(space: Any, seed: int = 3) -> Reinforce[Any]:
    return Reinforce(space, Objective(SearchBudget(latency_s=30)), seed=seed, lr=0.5)


async def test_a_search_learns_and_reports_the_best_feasible_graph(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path))
    seen: list[int] = []
    result = await atune(
        space, searcher(space), tasks(), evals=12, batch=3, minibatch_size=4,
        store=tmp_path / "s.sqlite", on_iteration=lambda it: seen.append(it.evaluations),
    )  # fmt: skip
    assert seen == [3, 6, 9, 12] and result.evaluations == 12 and result.iterations == 4
    assert result.best is not None and result.best_evaluation is not None
    assert result.best_evaluation.score == 1.0
    assert "good" in {n.model for n in result.best.nodes.values()}
    assert result.front and all(e.score <= 1.0 for _, e in result.front)
    assert [p.evaluations for p in result.curve] == list(range(1, 13))
    assert len(asked(tmp_path / "s.sqlite")) == 12


async def test_a_cache_makes_repeated_work_free(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path))
    cache = ag.CallCache(tmp_path / "calls.sqlite")
    first = await atune(
        space, searcher(space), tasks(), evals=6, batch=3, minibatch_size=4,
        store=tmp_path / "a.sqlite", cache=cache,
    )  # fmt: skip
    again = await atune(
        space, searcher(space), tasks(), evals=6, batch=3, minibatch_size=4,
        store=tmp_path / "b.sqlite", cache=cache,
    )  # fmt: skip
    assert again.cache_saved == 1.0 and first.cache_saved < 1.0
    a, b = first.best_evaluation, again.best_evaluation
    assert a is not None and b is not None
    assert (b.score, b.tokens, b.cost_usd) == (a.score, a.tokens, a.cost_usd)  # true costs
    assert b.latency_s == pytest.approx(a.latency_s, abs=0.05)


async def test_stopping_and_resuming_makes_the_same_decisions(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path))
    whole = await atune(
        space, searcher(space), tasks(), evals=12, batch=3, minibatch_size=4,
        store=tmp_path / "whole.sqlite",
    )  # fmt: skip
    for evals in (3, 7, 12):  # stopped after 3, then mid-iteration budget of 7, then done
        part = await atune(
            space, searcher(space), tasks(), evals=evals, batch=3, minibatch_size=4,
            store=tmp_path / "part.sqlite",
        )  # fmt: skip
    assert asked(tmp_path / "part.sqlite") == asked(tmp_path / "whole.sqlite")
    assert part.curve == whole.curve  # scores and tokens; measured latencies differ by run
    assert part.best == whole.best


def asked(path: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT iteration, slot, decisions FROM asked ORDER BY 1, 2")
        return [tuple(r) for r in rows]


def evaluated(path: Path) -> int:
    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM evaluations").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_kill_9_of_a_real_search_resumes_and_loses_nothing(tmp_path: Path) -> None:
    space = write_space(tmp_path, good=0.1, bad=0.1)
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"{i}?", "answer": "4"}) + "\n"
                for i in range(12))
    )  # fmt: skip
    common = [
        sys.executable, "-m", "agentgraph", "tune", str(space), "--tasks", str(task_file),
        "--evals", "15", "--batch", "3", "--minibatch", "3", "--seed", "5", "--no-progress",
        "--json",
    ]  # fmt: skip
    whole = subprocess.run(
        [*common, "--store", str(tmp_path / "whole.sqlite")], capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed.sqlite"
    # Kill at chosen points of progress, read from the store as the search writes it:
    # mid-iteration (1 of 3 graphs), at an iteration's end, and mid-iteration again.
    for target in (1, 6, 10):
        with subprocess.Popen(
            [*common, "--store", str(killed), "--resume"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) as proc:  # fmt: skip
            while evaluated(killed) < target:
                assert proc.poll() is None, "the search ended before it could be killed"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
        assert evaluated(killed) < 15
    resumed = subprocess.run(
        [*common, "--store", str(killed), "--resume"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert asked(killed) == asked(tmp_path / "whole.sqlite")
    a, b = json.loads(whole.stdout), json.loads(resumed.stdout)
    assert a["curve"] == b["curve"] and a["best"] == b["best"]


def test_a_store_of_another_search_is_refused_by_the_command(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(json.dumps({"id": "a", "question": "1?", "answer": "4"}) + "\n")
    base = [
        sys.executable, "-m", "agentgraph", "tune", str(space), "--tasks", str(task_file),
        "--evals", "2", "--batch", "2", "--no-progress", "--store", str(tmp_path / "s.db"),
    ]  # fmt: skip
    assert subprocess.run(base, capture_output=True, timeout=300, cwd=ROOT).returncode == 0
    other = subprocess.run(
        [*base, "--seed", "9"], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert other.returncode == 2 and "holds another search" in other.stderr
    assert "Traceback" not in other.stderr
    again = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 2 and "pass --resume to continue it" in again.stderr


@pytest.mark.slow
def test_the_example_space_tunes_on_the_shipped_model(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agentgraph", "tune", "examples/spaces/layered.yaml",
         "--tasks", "arc_easy:train[:6]", "--test", "arc_easy:test[:4]", "--evals", "4",
         "--batch", "2", "--minibatch", "2", "--store", str(tmp_path / "s.sqlite"),
         "--out", str(tmp_path / "best.yaml"), "--no-progress", "--json"],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr
    data = json.loads(out.stdout)
    assert data["evaluations"] == 4 and len(data["curve"]) == 4
    if data["best"] is not None:
        ag.loads_spec(data["best"])  # a graph `agentgraph run` accepts
        assert (tmp_path / "best.yaml").read_text() == data["best"]
        assert {r["graph"] for r in data["held_out"]["reports"]} >= {"tuned", "single:small"}


async def test_validation_tasks_pick_among_the_finalists(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path))
    result = await atune(
        space, searcher(space), tasks(), evals=9, batch=3, minibatch_size=4,
        store=tmp_path / "s.sqlite", val=tasks(5), finalists=3,
    )  # fmt: skip
    assert 1 <= len(result.validation) <= 3
    assert all(e.n_tasks == 5 for _, e in result.validation)
    best_on_val = max(e.score for _, e in result.validation)
    assert result.best_evaluation is not None and result.best_evaluation.score == best_on_val
    assert result.best in [s for s, _ in result.validation]


def test_the_command_writes_plots_and_reports_validation(tmp_path: Path) -> None:
    space = write_space(tmp_path)
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"{i}?", "answer": "4"}) + "\n"
                for i in range(8))
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "agentgraph", "tune", str(space), "--tasks", str(task_file),
         "--val", str(task_file), "--finalists", "2", "--evals", "4", "--batch", "2",
         "--minibatch", "2", "--store", str(tmp_path / "s.db"), "--plots",
         str(tmp_path / "plots"), "--no-progress"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "on validation tasks" in out.stdout and "Pareto front" in out.stdout
    for name in ("curve.png", "front.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_runs_an_agent_search_with_a_feedback_model_of_the_space(
    tmp_path: Path,
) -> None:
    update = json.dumps({"width": {"1": 0.1, "2": 0.2, "3": 0.7}})
    space = tmp_path / "space.yaml"
    space.write_text(
        SPACE.format(good=0, bad=0).replace(
            "defaults:", f"  judge: {{backend: scripted, options: {{responses: '{update}'}}}}\n"
            "defaults:"
        )
    )  # fmt: skip
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text(json.dumps({"id": "a", "question": "1?", "answer": "4"}) + "\n")
    base = [
        sys.executable, "-m", "agentgraph", "tune", str(space), "--tasks", str(task_file),
        "--evals", "4", "--batch", "2", "--no-progress", "--store", str(tmp_path / "s.db"),
        "--searcher", "agent",
    ]  # fmt: skip
    missing = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert missing.returncode == 2 and "--feedback-model" in missing.stderr
    assert "Traceback" not in missing.stderr
    out = subprocess.run(
        [*base, "--feedback-model", "judge"], capture_output=True, text=True, timeout=300,
        cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "falls back" not in out.stderr.lower() and "numeric" not in out.stderr.lower()
    with sqlite3.connect(tmp_path / "s.db") as db:
        state = json.loads(db.execute("SELECT state FROM states ORDER BY 1 DESC").fetchone()[0])
    assert state["agent"]["llm_updates"] == 2 and state["agent"]["fallbacks"] == 0


async def test_graphs_evaluated_side_by_side_make_the_same_search(tmp_path: Path) -> None:
    space = load_space(write_space(tmp_path, good=0.01, bad=0.01))
    runs = [
        await atune(
            space, searcher(space), tasks(), evals=9, batch=3, minibatch_size=4,
            store=tmp_path / f"s{parallel}.sqlite", parallel=parallel,
        )
        for parallel in (1, 3)
    ]  # fmt: skip
    assert asked(tmp_path / "s1.sqlite") == asked(tmp_path / "s3.sqlite")
    assert runs[0].curve == runs[1].curve and runs[0].best == runs[1].best
