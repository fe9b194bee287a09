"""The ``agentgraph`` command, run as a real subprocess on the shipped example."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def agentgraph(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentgraph", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_run_prints_answer_and_node_table() -> None:
    out = agentgraph("run", str(QUICKSTART), "What is 2 + 2?")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].strip() and lines[0] != "(no answer)"
    header = next(i for i, line in enumerate(lines) if line.startswith("node "))
    assert lines[header].split() == [
        "node",
        "role",
        "model",
        "status",
        "latency_s",
        "tok_in",
        "tok_out",
        "cost",
    ]
    rows = {line.split()[0]: line.split() for line in lines[header + 2 :]}
    assert set(rows) == {"solver_a", "solver_b", "final", "(run)"}
    for node in ("solver_a", "solver_b", "final"):
        _, _, model, status, latency, tok_in, tok_out, _ = rows[node]
        assert model == "smol" and status == "ok"
        assert float(latency) > 0 and int(tok_in) > 0 and int(tok_out) > 0


def test_run_json_and_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = agentgraph("run", str(QUICKSTART), "Name a planet.", "--json", "--trace", str(trace))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] and data["answer"] and data["tokens"] > 0
    assert set(data["nodes"]) == {"solver_a", "solver_b", "final"}
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(r["node"] for r in records) == ["final", "solver_a", "solver_b"]


def test_run_json_reports_spent_and_would_be_figures_of_a_cached_run(tmp_path: Path) -> None:
    cache = str(tmp_path / "calls.sqlite")
    args = ("run", str(QUICKSTART), "Name a planet.", "--json", "--cache", cache)
    first = json.loads(agentgraph(*args).stdout)
    again = agentgraph(*args)
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["answer"] == first["answer"]
    assert second["tokens"] == 0 and second["cost"] == 0
    assert second["uncached_tokens"] == first["tokens"] > 0
    assert second["overrun"] is None
    final = second["nodes"]["final"]
    assert final["answer"] == second["answer"] and "parse_error" not in final


def test_bad_graph_exits_2_with_located_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = QUICKSTART.read_text()
    bad.write_text(text.replace("model: smol\n  solver_b", "model: smoll\n  solver_b"))
    out = agentgraph("run", str(bad), "q")
    assert out.returncode == 2
    assert f"{bad}:" in out.stderr and "nodes.solver_a.model: unknown model 'smoll'" in out.stderr
    assert "Traceback" not in out.stderr


def test_show_and_schema() -> None:
    out = agentgraph("show", str(QUICKSTART))
    assert out.returncode == 0, out.stderr
    assert "quickstart: 3 nodes, output 'final'" in out.stdout
    assert "solver_a, solver_b" in out.stdout
    normalized = agentgraph("show", str(QUICKSTART), "--yaml")
    assert normalized.stdout.startswith("schema: agentgraph/v1\n")
    schema = json.loads(agentgraph("schema").stdout)
    assert "nodes" in schema["required"]
