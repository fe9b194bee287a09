"""Every shipped example runs, on the real local model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import agentgraph as ag

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_example_runs(path: Path) -> None:
    result = ag.load(path).run("What is 3 + 4?", timeout_s=600)
    assert result.ok, result.failed
    assert result.answer
    assert result.tokens > 0


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_python_example_runs(path: Path) -> None:
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "answer:" in out.stdout and "saved" in out.stdout
