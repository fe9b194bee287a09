"""A server that echoes the API key back, in every place a reply can carry it: the key
reaches none of the error text, the trace, repr(result), ``--json`` or the ``--trace``
file, whichever backend talks to it (real loopback server, real clients)."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest

import agentgraph as ag
from agentgraph._cli import main

from .faultserver import ECHOES, FaultServer, escaped, fault_graph, run_bounded

KEY = "sk-echo/5ecret-0123456789"
# Part of the key that survives any escaping of '-' and '/': found, it is a leak.
TELL = "5ecret"
ENV = "AG_TEST_ECHO_KEY"
CHAT = {
    "text": "choices.0.message.content",
    "prompt_tokens": "usage.prompt_tokens",
    "completion_tokens": "usage.completion_tokens",
    "finish_reason": "choices.0.finish_reason",
}


def model(flavor: str, url: str, name: str) -> str:
    """A YAML flow mapping for model ``name`` of the fault server, by backend flavor."""
    if flavor == "http":
        opts = {
            "url": f"{url}/chat/completions",
            "api_key_env": ENV,
            "request": {"model": name, "messages": "{messages}", "max_tokens": "{max_tokens}"},
            "response": CHAT,
        }
        return f"{{backend: http, options: {json.dumps(opts)}}}"
    opts = {"base_url": url, "api_key_env": ENV, "stream": flavor == "openai-stream"}
    return f"{{backend: openai, model: {json.dumps(name)}, options: {json.dumps(opts)}}}"


FLAVORS = ("openai", "openai-stream", "http")
# Whether the faulty node ends in a (transient, retried) error or with an answer.
FAILS = {"body", "escaped", "retry-after", "usage", "shape", "string"}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, KEY)


def graph_text(faults: FaultServer, flavor: str, how: str) -> str:
    good = model(flavor, faults.url, "ok")
    return fault_graph(good, model(flavor, faults.url, f"echo-key-{how}"))


def test_the_server_really_echoes_the_key() -> None:
    assert set(ECHOES) == FAILS | {"answer"}
    # The escaped form hides the key from a plain search, not from the TELL.
    assert KEY not in escaped(KEY) and TELL in escaped(KEY)
    assert json.loads(escaped(KEY)) == KEY


@pytest.mark.parametrize("how", ECHOES)
@pytest.mark.parametrize("flavor", FLAVORS)
async def test_no_echo_of_the_key_reaches_the_result(
    faults: FaultServer, flavor: str, how: str
) -> None:
    graph, result = await run_bounded(graph_text(faults, flavor, how))
    assert {s.headers["authorization"] for s in faults.seen} == {f"Bearer {KEY}"}
    assert result.answer == "42" and result.nodes["sibling"].status == "ok"
    shown = [repr(result), repr(graph), *(json.dumps(r.to_dict()) for r in result.trace)]
    shown += [repr(n) for n in result.nodes.values()]
    if how in FAILS:
        # Garbled 200s (wrong shape, odd usage) are retried like any transient fault.
        err = result.failed["faulty"]
        assert type(err) is ag.TransientBackendError, err
        assert faults.hits[f"echo-key-{how}"] == 3
        shown += [str(err), repr(err), *traceback.format_exception(err)]
        if how in ("body", "escaped", "retry-after"):
            assert "***" in str(err)  # it was there, and was cut out
    else:
        faulty = result.nodes["faulty"]
        assert faulty.status == "ok" and "(with key ***)" in faulty.message.text
    leaks = [s for s in shown if TELL in s]
    assert not leaks, leaks[0]


@pytest.mark.parametrize("how", ECHOES)
@pytest.mark.parametrize("flavor", ["openai", "http"])
def test_no_echo_of_the_key_reaches_the_command_output(
    faults: FaultServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flavor: str,
    how: str,
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(graph_text(faults, flavor, how))
    trace = tmp_path / "trace.jsonl"
    code = main(["run", str(graph), "What is 6 * 7?", "--json", "--trace", str(trace)])
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert code == 0 and data["answer"] == "42"
    assert ("faulty" in data["failed"]) == (how in FAILS)
    records = trace.read_text()
    assert len(records.splitlines()) == 3
    for shown in (out, err, records):
        assert TELL not in shown
