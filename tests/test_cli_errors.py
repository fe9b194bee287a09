"""Bad invocations of the ``agentgraph`` command: each exits non-zero with one line on
stderr, without a traceback, before anything runs or is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentgraph._cli import main

GRAPH = """
models:
  m: {backend: scripted, options: {responses: "Answer: 4"}}
nodes:
  a: {role: proposer, model: m}
output: a
"""

SPACE = """
schema: agentgraph-space/v1
name: toy
task: math
models:
  m: {backend: scripted, options: {responses: "Answer: 4"}}
layered:
  width: [1, 2]
  rounds: [0]
  aggregator: [vote]
  models:
    proposer: [m]
"""

FILES = {
    "graph.yaml": GRAPH,
    "space.yaml": SPACE,
    "tasks.jsonl": json.dumps({"id": "a", "question": "2 + 2?", "answer": "4"}) + "\n",
    "garbage.sqlite": "this is not a database\n" * 100,
    "bad_yaml.yaml": "a: [1, 2\n",
    "list.yaml": "- 1\n- 2\n",
    "bad_entry.yaml": "'llama_cpp:x': {prefill_tok_s: -1, decode_tok_s: 10}\n",
    "bad_graph.yaml": GRAPH.replace("model: m}", "model: n}"),
}

# (case id, argv, a phrase the one line must hold). Names refer to files of FILES, the
# folder ``folder`` and ``missing`` (which never exists) inside the test's own folder.
CASES: list[tuple[str, list[str], str]] = [
    # run: inputs
    ("run-missing-graph", ["run", "missing.yaml", "q"], "'missing.yaml' does not exist"),
    ("run-graph-is-a-directory", ["run", "folder", "q"], "'folder' is a directory"),
    ("run-no-question", ["run", "graph.yaml"], "required: question"),
    ("run-unknown-option", ["run", "graph.yaml", "q", "--bogus"], "unrecognized arguments"),
    ("unknown-command", ["nope"], "invalid choice: 'nope'"),
    ("no-command", [], "required: command"),
    ("replay-missing", ["run", "graph.yaml", "q", "--replay", "missing/r.sqlite"],
     "replay cache 'missing/r.sqlite' does not exist"),
    ("replay-directory", ["run", "graph.yaml", "q", "--replay", "folder"],
     "'folder' is a directory"),
    ("replay-garbage", ["run", "graph.yaml", "q", "--replay", "garbage.sqlite"],
     "not an SQLite database"),
    ("cache-garbage", ["run", "graph.yaml", "q", "--cache", "garbage.sqlite"],
     "not an SQLite database"),
    ("cache-missing-folder", ["run", "graph.yaml", "q", "--cache", "missing/c.sqlite"],
     "folder 'missing' does not exist"),
    ("cache-directory", ["run", "graph.yaml", "q", "--cache", "folder"],
     "call cache 'folder' is a directory"),
    ("cache-and-replay",
     ["run", "graph.yaml", "q", "--cache", "c.sqlite", "--replay", "garbage.sqlite"],
     "not allowed with argument"),
    ("rebuild-without-cache", ["run", "graph.yaml", "q", "--rebuild-cache"],
     "--rebuild-cache applies to the cache of --cache FILE"),
    ("cache-of-a-bad-graph", ["run", "bad_graph.yaml", "q", "--cache", "new.sqlite"],
     "bad_graph.yaml:5:30: nodes.a.model"),
    ("eval-cache-of-a-bad-graph",
     ["eval", "bad_graph.yaml", "--tasks", "tasks.jsonl", "--cache", "new.sqlite"],
     "unknown model 'n'"),
    ("tune-cache-no-feedback-model",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--searcher", "agent", "--cache",
      "new.sqlite"], "--searcher agent needs --feedback-model NAME"),
    # run: outputs, checked before the run
    ("trace-directory", ["run", "graph.yaml", "q", "--trace", "folder"],
     "trace file 'folder' is a directory"),
    ("trace-missing-folder", ["run", "graph.yaml", "q", "--trace", "missing/t.jsonl"],
     "folder 'missing' does not exist"),
    ("trace-under-a-file", ["run", "graph.yaml", "q", "--trace", "graph.yaml/t.jsonl"],
     "'graph.yaml' is not a folder"),
    # run: numbers
    ("timeout-nan", ["run", "graph.yaml", "q", "--timeout", "nan"], "'nan' is not a usable"),
    ("timeout-negative", ["run", "graph.yaml", "q", "--timeout", "-1"], "'-1' is not a usable"),
    ("timeout-inf", ["run", "graph.yaml", "q", "--timeout", "inf"], "'inf' is not a usable"),
    ("timeout-zero", ["run", "graph.yaml", "q", "--timeout", "0"], "seconds > 0"),
    ("timeout-text", ["run", "graph.yaml", "q", "--timeout", "soon"],
     "'soon' is not a number of seconds"),
    # estimate and profile: the profile store
    ("estimate-missing-graph", ["estimate", "missing.yaml"], "does not exist"),
    ("profiles-directory", ["estimate", "graph.yaml", "--profiles", "folder"],
     "profile store 'folder' is a directory"),
    ("profiles-bad-yaml", ["estimate", "graph.yaml", "--profiles", "bad_yaml.yaml"],
     "is not valid YAML at line 2"),
    ("profiles-not-a-mapping", ["estimate", "graph.yaml", "--profiles", "list.yaml"],
     "holds a list, not a mapping"),
    ("profiles-bad-entry", ["estimate", "graph.yaml", "--profiles", "bad_entry.yaml"],
     "holds a bad profile 'llama_cpp:x': prefill_tok_s"),
    ("profiles-missing", ["estimate", "graph.yaml", "--profiles", "missing.yaml"],
     "write one with: agentgraph profile"),
    ("profile-repeats-zero", ["profile", "graph.yaml", "--repeats", "0"], ">= 1"),
    ("profile-repeats-negative", ["profile", "graph.yaml", "--repeats", "-3"], ">= 1"),
    ("profile-repeats-text", ["profile", "graph.yaml", "--repeats", "two"],
     "'two' is not a whole number"),
    ("profile-store-directory", ["profile", "graph.yaml", "--profiles", "folder"],
     "is a directory"),
    ("profile-store-bad-yaml", ["profile", "graph.yaml", "--profiles", "bad_yaml.yaml"],
     "is not valid YAML"),
    ("profile-store-missing-folder",
     ["profile", "graph.yaml", "--profiles", "missing/p.yaml"],
     "folder 'missing' does not exist"),
    ("profile-missing-model-file", ["profile", "missing.gguf"],
     "model file 'missing.gguf' does not exist"),
    ("profile-unknown-model", ["profile", "graph.yaml", "--model", "nope"],
     "unknown model 'nope'; valid models: 'm'"),
    ("show-missing", ["show", "missing.yaml"], "does not exist"),
    ("show-directory", ["show", "folder"], "is a directory"),
    # eval
    ("eval-no-tasks", ["eval", "graph.yaml"], "required: --tasks"),
    ("eval-out-directory", ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--out", "folder"],
     "results file 'folder' is a directory"),
    ("eval-out-missing-folder",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--out", "missing/o.jsonl"],
     "folder 'missing' does not exist"),
    ("eval-trace-directory",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--trace", "folder"], "is a directory"),
    ("eval-timeout-nan", ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--timeout", "nan"],
     "'nan' is not a usable"),
    ("eval-concurrency-zero",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--concurrency", "0"], ">= 1"),
    ("eval-budget-nan",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--budget", "tokens=nan"],
     "give a finite number"),
    ("eval-budget-unknown",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--budget", "dollars=1"],
     "K one of tokens, cost_usd, latency_s"),
    ("eval-cache-garbage",
     ["eval", "graph.yaml", "--tasks", "tasks.jsonl", "--cache", "garbage.sqlite"],
     "not an SQLite database"),
    ("eval-missing-graph", ["eval", "graph.yaml", "missing.yaml", "--tasks", "tasks.jsonl"],
     "'missing.yaml' does not exist"),
    # tune
    ("tune-missing-space", ["tune", "missing.yaml", "--tasks", "tasks.jsonl"],
     "space file 'missing.yaml' does not exist"),
    ("tune-evals-zero", ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--evals", "0"],
     ">= 1"),
    ("tune-batch-negative",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--batch", "-1"], ">= 1"),
    ("tune-minibatch-text",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--minibatch", "x"], "not a whole"),
    ("tune-parallel-zero",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--parallel", "0"], ">= 1"),
    ("tune-finalists-zero",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--finalists", "0"], ">= 1"),
    ("tune-timeout-inf",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--timeout", "inf"], "'inf'"),
    ("tune-out-directory",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--out", "folder"], "is a directory"),
    ("tune-out-missing-folder",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--out", "missing/best.yaml"],
     "folder 'missing' does not exist"),
    ("tune-store-directory",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--store", "folder"], "is a directory"),
    ("tune-plots-a-file",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--plots", "graph.yaml"],
     "plots folder 'graph.yaml' is a file"),
    ("tune-plots-missing-parent",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--plots", "missing/deeper"],
     "folder 'missing' does not exist"),
    ("tune-cache-garbage",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--cache", "garbage.sqlite"],
     "not an SQLite database"),
    ("tune-unknown-searcher",
     ["tune", "space.yaml", "--tasks", "tasks.jsonl", "--searcher", "genetic"],
     "invalid choice: 'genetic'"),
]  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "folder").mkdir()
    monkeypatch.chdir(tmp_path)
    # The default profile store, when a case names none: a file that does not exist yet.
    monkeypatch.setenv("AGENTGRAPH_PROFILES", str(tmp_path / "default-profiles.yaml"))
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def assert_one_line_error(code: int, out: str, err: str, needle: str) -> None:
    assert code == 2, (code, err)
    assert err.startswith("agentgraph: error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err and needle in err, err
    assert out == ""


@pytest.mark.parametrize(("argv", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_invocation_is_one_line_and_changes_nothing(
    workdir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    before = snapshot(workdir)
    code = main(argv)
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, needle)
    assert snapshot(workdir) == before


def test_bad_profile_store_by_default_is_named_with_its_remedy(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGRAPH_PROFILES", str(workdir / "bad_yaml.yaml"))
    code = main(["estimate", "graph.yaml"])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, "default profile store")
    assert "$AGENTGRAPH_PROFILES" in err and "bad_yaml.yaml" in err


def test_the_default_profile_store_may_be_new_folders_and_all(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTGRAPH_PROFILES", str(workdir / "new" / "profiles.yaml"))
    # Refused for an unknown model, after the store passed its check.
    code = main(["profile", "graph.yaml", "--model", "nope"])
    out, err = capsys.readouterr()
    assert_one_line_error(code, out, err, "unknown model 'nope'")
    assert main(["estimate", "graph.yaml"]) == 0
    assert not (workdir / "new").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_graph_or_unwritable_output(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "graph.yaml").chmod(0)
    (workdir / "folder").chmod(0o500)
    try:
        for argv, needle in (
            (["run", "graph.yaml", "q"], "cannot be read"),
            (["run", "space.yaml", "q", "--trace", "folder/t.jsonl"], "cannot be written"),
        ):
            code = main(argv)
            out, err = capsys.readouterr()
            assert_one_line_error(code, out, err, needle)
    finally:
        (workdir / "graph.yaml").chmod(0o644)
        (workdir / "folder").chmod(0o755)


def test_good_invocations_still_run_and_write_their_outputs(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["run", "graph.yaml", "q", "--json", "--timeout", "30", "--trace", "t.jsonl",
         "--cache", "c.sqlite"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["answer"] == "4"
    assert (workdir / "t.jsonl").read_text().count("\n") == 1
    code = main(["run", "graph.yaml", "q", "--replay", "c.sqlite", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["tokens"] == 0, err
    assert main(["run", "--help"]) == 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "missing.yaml", "q"], "'missing.yaml' does not exist"),
        (["run", "graph.yaml", "q", "--timeout", "nan"], "'nan' is not a usable"),
        (["run", "graph.yaml", "q", "--replay", "missing/r.sqlite"], "does not exist"),
        (["run", "graph.yaml", "q", "--trace", "missing/t.jsonl"], "does not exist"),
        (["tune", "space.yaml", "--tasks", "tasks.jsonl", "--evals", "0"], ">= 1"),
    ],
)
def test_the_real_command_fails_the_same_way(workdir: Path, argv: list[str], needle: str) -> None:
    before = snapshot(workdir)
    out = subprocess.run(
        [sys.executable, "-m", "agentgraph", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    assert_one_line_error(out.returncode, out.stdout, out.stderr, needle)
    assert snapshot(workdir) == before
