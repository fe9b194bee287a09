"""Evaluating graphs on task sets: scores, failures, budgets, resuming, paired comparison,
and the ``agentgraph eval`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentgraph as ag
from agentgraph._evaluate import bootstrap_ci, read_outcomes

ROOT = Path(__file__).resolve().parent.parent


def math_tasks(n: int = 10, gold: str = "4") -> ag.TaskSet:
    tasks = tuple(
        ag.Task(f"t{i}", f"What is {i} + 4?", answer=gold if i % 2 == 0 else "5") for i in range(n)
    )
    return ag.TaskSet("mine", "math", tasks, scorer="numeric")


def proposer_graph(backend: ag.ModelBackend, **defaults: object) -> ag.Graph:
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted")},
        nodes={"p": ag.NodeSpec(role="proposer", model="m")},
        output="p",
        **defaults,  # type: ignore[arg-type]
    )
    return ag.Graph(spec, backends={"m": backend})


async def test_every_task_is_run_scored_and_reported() -> None:
    backend = ag.ScriptedBackend("Reasoning first.\nAnswer: 4")
    report = await proposer_graph(backend).aevaluate(math_tasks(10), label="g")
    assert [o.task_id for o in report.outcomes] == [f"t{i}" for i in range(10)]
    assert [o.score for o in report.outcomes] == [1.0, 0.0] * 5
    assert report.score == 0.5 and report.n == 10
    lo, hi = report.ci95
    assert 0.0 <= lo < 0.5 < hi <= 1.0
    assert report.tokens == sum(o.tokens for o in report.outcomes) > 0
    assert all(o.status == "ok" and o.answer == "4" for o in report.outcomes)
    wrong = report.outcomes[1]
    assert wrong.extracted == "4" and wrong.reason  # says what was expected
    assert len(backend.calls) == 10


async def test_the_graph_runs_with_the_task_sets_kind_and_choices() -> None:
    backend = ag.ScriptedBackend("The answer is the kilometer.")
    task = ag.Task("q1", "Which unit is longest?", answer="B", choices=("meter", "kilometer"))
    tasks = ag.TaskSet("mc", "multiple_choice", (task,))
    report = await proposer_graph(backend).aevaluate(tasks)
    assert report.score == 1.0
    (request,) = backend.calls
    assert "A. meter\nB. kilometer" in request.messages[-1].content


async def test_failed_and_over_budget_tasks_score_zero_and_are_listed() -> None:
    backend = ag.ScriptedBackend("Answer: 4", failures=[ag.BackendError("boom")])
    tasks = math_tasks(3)
    report = await proposer_graph(backend).aevaluate(tasks, concurrency=1)
    assert [o.status for o in report.outcomes] == ["failed", "ok", "ok"]
    assert report.outcomes[0].score == 0.0 and "boom" in (report.outcomes[0].reason or "")
    assert report.n == 3  # a failure counts against the graph
    tight = await proposer_graph(ag.ScriptedBackend("Answer: 4")).aevaluate(
        tasks, budget=ag.Budget(tokens=5)
    )
    assert {o.status for o in tight.outcomes} == {"budget"}
    assert tight.score == 0.0 and set(tight.by_status("budget")) == {"t0", "t1", "t2"}


async def test_tasks_without_gold_are_skipped_not_scored() -> None:
    tasks = ag.TaskSet("t", "text", (ag.Task("a", "Say hi.", answer="hi"), ag.Task("b", "?")))
    report = await proposer_graph(ag.ScriptedBackend("hi")).aevaluate(tasks)
    assert report.n == 1 and report.score == 1.0
    assert report.by_status("skipped") == {"b": "no gold answer"}


async def test_a_second_evaluation_resumes_from_the_results_file(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    first = ag.ScriptedBackend("Answer: 4")
    a = await proposer_graph(first).aevaluate(math_tasks(6)[:4], out=out)
    assert len(first.calls) == 4
    again = ag.ScriptedBackend("Answer: 4")
    b = await proposer_graph(again).aevaluate(math_tasks(6), out=out)
    assert len(again.calls) == 2  # only the two tasks not in the file
    assert [o.task_id for o in b.outcomes] == [f"t{i}" for i in range(6)]
    assert b.outcomes[:4] == a.outcomes
    c = await proposer_graph(ag.ScriptedBackend("Answer: 4")).aevaluate(math_tasks(6), out=out)
    assert c.to_dict() == b.to_dict()
    assert len(read_outcomes(out)) == 6
    # An edited task is run again.
    edited = list(math_tasks(6))
    edited[0] = ag.Task("t0", "What is 0 + 4, in words?", answer="4")
    redo = ag.ScriptedBackend("Answer: 4")
    await proposer_graph(redo).aevaluate(
        ag.TaskSet("mine", "math", tuple(edited), scorer="numeric"), out=out
    )
    assert [r.messages[-1].content for r in redo.calls] == ["What is 0 + 4, in words?"]
    # Other settings are another evaluation: nothing is reused.
    other = ag.ScriptedBackend("Answer: 4")
    await proposer_graph(other).aevaluate(math_tasks(6), out=out, budget=ag.Budget(tokens=999))
    assert len(other.calls) == 6


def test_a_line_cut_short_by_a_kill_is_dropped_and_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    import asyncio

    asyncio.run(proposer_graph(ag.ScriptedBackend("Answer: 4")).aevaluate(math_tasks(2), out=out))
    whole = out.read_text()
    out.write_text(whole + whole.splitlines()[0][:40])  # a kill mid-write
    assert len(read_outcomes(out)) == 2
    asyncio.run(proposer_graph(ag.ScriptedBackend("Answer: 4")).aevaluate(math_tasks(3), out=out))
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)


def test_a_damaged_results_file_is_a_located_error(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text('{"not": "a result"}\n{}\n')
    with pytest.raises(ag.TaskError, match=rf"{out}:1: not a result line"):
        read_outcomes(out)


async def test_paired_comparison_over_the_same_tasks() -> None:
    tasks = math_tasks(10, gold="4")
    good = await proposer_graph(ag.ScriptedBackend("Answer: 4")).aevaluate(tasks, label="a")
    bad = await proposer_graph(ag.ScriptedBackend("Answer: 7")).aevaluate(tasks, label="b")
    cmp = ag.compare(good, bad)
    assert (cmp.a, cmp.b, cmp.n) == ("a", "b", 10)
    assert cmp.diff == -0.5
    assert cmp.ci95[0] <= -0.5 <= cmp.ci95[1] < 0


def test_bootstrap_interval_is_reproducible_and_sane() -> None:
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values, seed=3)
    assert (lo, hi) == bootstrap_ci(values, seed=3)
    assert 0.18 < lo < 0.3 < hi < 0.42
    assert bootstrap_ci([1.0] * 5) == (1.0, 1.0)


SCRIPTED_GRAPH = """
schema: agentgraph/v1
name: {name}
models:
  m: {{backend: scripted, options: {{responses: "Answer: {answer}", latency_s: {latency}}}}}
nodes:
  p: {{role: proposer, model: m}}
output: p
"""


def write_case(tmp_path: Path, n: int, latency: float = 0.0) -> tuple[Path, Path, Path]:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": f"{i}?", "answer": "4"}) + "\n"
                for i in range(n))
    )  # fmt: skip
    good = tmp_path / "good.yaml"
    good.write_text(SCRIPTED_GRAPH.format(name="good", answer=4, latency=latency))
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCRIPTED_GRAPH.format(name="bad", answer=5, latency=latency))
    return tasks, good, bad


def agentgraph_eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentgraph", "eval", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_eval_command_reports_graphs_and_their_paired_difference(tmp_path: Path) -> None:
    tasks, good, bad = write_case(tmp_path, 8)
    out = agentgraph_eval(str(good), str(bad), "--tasks", f"{tasks}:all[:6]", "--kind", "math")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"{tasks}:all[:6]: 6 tasks (math, scored by math)")
    rows = {line.split()[0]: line.split() for line in lines[3:5]}
    assert rows["good"][1:3] == ["6", "1.000"] and rows["bad"][1:3] == ["6", "0.000"]
    assert lines[5].startswith("bad - good: -1.000 [-1.000, -1.000] over 6 paired tasks")
    data = json.loads(
        agentgraph_eval(str(good), "--tasks", str(tasks), "--kind", "math", "--json").stdout
    )
    assert data["reports"][0]["score"] == 1.0 and data["reports"][0]["n"] == 8


def test_eval_help_documents_every_flag() -> None:
    out = agentgraph_eval("--help")
    assert out.returncode == 0
    for flag in (
        "--tasks", "--field", "--kind", "--budget", "--timeout", "--concurrency", "--cache",
        "--out", "--trace", "--json", "--seed", "--no-progress",
    ):  # fmt: skip
        assert flag in out.stdout, flag


def test_bad_eval_input_is_one_line_on_stderr(tmp_path: Path) -> None:
    tasks, good, _ = write_case(tmp_path, 2)
    for args, message in [
        (("--tasks", "gsm9k"), "unknown task set 'gsm9k'"),
        (("--tasks", str(tasks), "--budget", "tokens=abc"), "bad --budget value 'abc'"),
        (("--tasks", str(tasks), "--budget", "money=1"), "bad --budget item 'money=1'"),
    ]:
        out = agentgraph_eval(str(good), *args)
        assert out.returncode == 2, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr


def test_a_killed_evaluation_loses_no_finished_task(tmp_path: Path) -> None:
    tasks, good, _ = write_case(tmp_path, 40, latency=0.05)
    results = tmp_path / "results.jsonl"
    args = [str(good), "--tasks", str(tasks), "--kind", "math", "--out", str(results)]
    cmd = [sys.executable, "-m", "agentgraph", "eval", *args, "--concurrency", "2"]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if results.exists() and len(results.read_text().splitlines()) >= 8:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    before = read_outcomes(results)
    assert 8 <= len(before) < 40, "the kill came too late to test anything"
    resumed = agentgraph_eval(*args, "--json")
    assert resumed.returncode == 0, resumed.stderr
    after = read_outcomes(results)
    assert after[: len(before)] == before  # kept as they were
    assert sorted(o.task_id for o in after) == sorted(f"q{i}" for i in range(40))
    assert json.loads(resumed.stdout)["reports"][0]["score"] == 1.0


async def test_the_progress_bar_shows_done_total_score_tokens_and_cost() -> None:
    import io
    import re

    from rich.console import Console

    from agentgraph._cli import _EvalProgress

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    graph = proposer_graph(ag.ScriptedBackend("Answer: 4"))
    with _EvalProgress(disable=False, console=console) as progress:
        report = await graph.aevaluate(
            math_tasks(4), label="mine", on_outcome=progress.track("mine", 4)
        )
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    last = [line for line in text.splitlines() if line.startswith("mine")][-1]
    assert "4/4" in last and "score 0.500" in last and "$0.0000" in last
    assert f" {report.tokens} tok " in last
