"""Every shipped example runs, on the real local model; the quickstart gives the answer
the README shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import agentgraph as ag

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICKSTART_QUESTION = "What is the capital of Japan?"  # the question in README.md


# The in-process tests are async: asyncio.run (Graph.run) in a sync test orphans the event
# loop pytest-asyncio has set, and the ResourceWarning fails the session.


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
async def test_yaml_example_runs(path: Path) -> None:
    async with ag.load(path) as graph:
        result = await graph.arun("What is 3 + 4?", timeout_s=600)
    assert result.ok, result.failed
    assert result.answer
    assert result.tokens > 0


def test_every_python_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == {"python_api.py", "evaluate.py"}


def test_python_api_example_runs() -> None:
    path = EXAMPLES / "python_api.py"
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    answers = [line.removeprefix("answer:").strip() for line in lines if line.startswith("answer:")]
    assert len(answers) == 1, out.stdout
    assert answers[0] not in ("", "None"), out.stdout
    assert lines[-1].startswith("saved "), out.stdout


async def test_quickstart_answers_the_readme_question() -> None:
    """The README's first command, as a newcomer runs it; seeded, so a second run (here in
    process) repeats the answer."""
    cmd = [sys.executable, "-m", "agentgraph", "run", str(EXAMPLES / "quickstart.yaml")]
    out = subprocess.run(
        [*cmd, QUICKSTART_QUESTION], capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr
    answer, blank, header, _, *rows = out.stdout.splitlines()
    assert "Tokyo" in answer and blank == ""
    assert header.split() == [
        "node", "role", "model", "status", "latency_s", "tok_in", "tok_out", "cost"
    ]  # fmt: skip
    assert [r.split()[:2] for r in rows] == [
        ["solver_a", "proposer"],
        ["solver_b", "proposer"],
        ["final", "synthesizer"],
        ["(run)", "ok"],
    ]
    async with ag.load(EXAMPLES / "quickstart.yaml") as graph:
        again = await graph.arun(QUICKSTART_QUESTION, timeout_s=600)
    assert again.ok and again.answer == answer


def test_evaluate_example_compares_two_graphs_on_two_benchmarks() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "evaluate.py"), "6"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "arc_easy:test[:6] (multiple_choice, 6 tasks)"
    assert lines[4] == "gsm8k:test[:3] (math, 3 tasks)"
    for i in (1, 2, 5, 6):
        name, _, score, *_ = lines[i].split()
        assert name in ("single", "self_consistency") and 0.0 <= float(score) <= 1.0
        assert "failed 0" in lines[i]
    assert lines[3].strip().startswith("self_consistency - single:")
