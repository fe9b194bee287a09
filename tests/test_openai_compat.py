"""The openai backend against a real llama.cpp server and a fault-injecting server."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from agentgraph.integrations import OpenAIBackend

import agentgraph as ag

from . import llama_server
from .conftest import request
from .faultserver import (
    LONG,
    LONG_WORDS,
    FaultServer,
    assert_only_faulty_failed,
    fault_graph,
    run_bounded,
    serving,
)


def openai_model(url: str, model: str, **options: object) -> str:
    opts = ", ".join(f"{k}: {json.dumps(v)}" for k, v in {"base_url": url, **options}.items())
    return f"{{backend: openai, model: {json.dumps(model)}, options: {{{opts}}}}}"


def max_overlap(trace: ag.Trace) -> int:
    edges = sorted(
        itertools.chain.from_iterable(
            ((r.started_s, 1), (r.started_s + r.latency_s, -1)) for r in trace
        ),
        key=lambda e: (e[0], e[1]),
    )
    return max(itertools.accumulate(d for _, d in edges))


# --- a real server ------------------------------------------------------------------


async def test_completion_reports_the_servers_usage(llama_url: str) -> None:
    backend = OpenAIBackend(llama_server.MODEL, base_url=llama_url)
    try:
        done = await backend.complete(request("Name a colour."))
    finally:
        await backend.aclose()
    assert done.text.strip() and done.finish_reason in ("stop", "length")
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= 8
    assert done.usage.prompt_tokens > 5
    assert done.latency_s > 0 and not done.cached
    assert backend.id == "openai:smol" and backend.slots == 8


async def test_streaming_gives_the_same_text(llama_url: str) -> None:
    plain = OpenAIBackend(llama_server.MODEL, base_url=llama_url)
    streamed = OpenAIBackend(llama_server.MODEL, base_url=llama_url, stream=True)
    try:
        a = await plain.complete(request("Count: one, two,"))
        b = await streamed.complete(request("Count: one, two,"))
    finally:
        await asyncio.gather(plain.aclose(), streamed.aclose())
    assert b.text == a.text and b.finish_reason == a.finish_reason
    # llama-cpp-python's server ignores include_usage: usage unknown, not guessed.
    assert a.usage is not None and b.usage is None


async def test_a_graph_runs_on_the_server(llama_url: str) -> None:
    text = f"""
models:
  smol: {openai_model(llama_url, "smol")}
defaults:
  sampling: {{max_tokens: 12, temperature: 0.0, seed: 3}}
nodes:
  a: {{role: proposer, model: smol}}
  b: {{role: proposer, model: smol, prompt: "Briefly: {{question}}"}}
  final: {{role: synthesizer, model: smol, inputs: [a, b]}}
output: final
"""
    _, result = await run_bounded(text)
    assert result.ok, result.failed
    assert result.answer and all(result.nodes[n].message.text for n in ("a", "b"))
    assert len(result.trace) == 3
    for rec in result.trace:
        assert rec.backend == "openai:smol" and rec.attempts == 1
        assert rec.prompt_tokens > 5 and 1 <= rec.completion_tokens <= 12
    assert result.tokens == sum(r.prompt_tokens + r.completion_tokens for r in result.trace)


async def test_calls_respect_slots(llama_url: str) -> None:
    nodes = "\n".join(f"  p{i}: {{role: proposer, model: smol}}" for i in range(4))
    text = f"""
models:
  smol: {{backend: openai, model: smol, slots: 2, options: {{base_url: "{llama_url}"}}}}
defaults:
  sampling: {{max_tokens: 4, temperature: 0.0}}
nodes:
{nodes}
  final: {{role: synthesizer, model: smol, inputs: [p0, p1, p2, p3]}}
output: final
"""
    graph, result = await run_bounded(text)
    assert result.ok, result.failed
    assert graph.backends["smol"].slots == 2
    assert max_overlap(result.trace) == 2  # two in flight at once, never three


def test_each_sync_run_gets_a_client_of_its_own_loop(llama_url: str) -> None:
    # Graph.run is asyncio.run each time: a client of the first, closed loop must not be
    # reused by the second.
    text = f"""
models:
  smol: {openai_model(llama_url, "smol")}
nodes:
  a: {{role: proposer, model: smol, sampling: {{max_tokens: 4, temperature: 0.0}}}}
output: a
"""
    graph = ag.loads(text)
    first, second = graph.run("Hi"), graph.run("Hi")
    assert first.ok and second.ok, (first.failed, second.failed)
    assert first.answer == second.answer


def test_a_client_left_open_is_closed_with_its_loop(faults: FaultServer) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url)
    clients = []

    async def call() -> None:
        clients.append(await backend._clients.get())
        assert (await backend.complete(request("hi"))).text == "Answer: 42"

    asyncio.run(call())
    asyncio.run(call())
    assert clients[0] is not clients[1]
    assert all(c.is_closed() for c in clients)


# --- faults -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_transient_faults_are_retried(faults: FaultServer, stream: bool) -> None:
    text = fault_graph(
        openai_model(faults.url, "ok", stream=stream),
        openai_model(faults.url, "flaky-2", stream=stream),
    )
    _, result = await run_bounded(text)
    assert result.ok and result.answer == "42", result.failed
    (rec,) = [r for r in result.trace if r.node == "faulty"]
    assert rec.attempts == 3 and rec.error is None and faults.hits["flaky-2"] == 3
    assert rec.prompt_tokens > 10 and rec.completion_tokens == 3  # the server's usage


@pytest.mark.parametrize(
    ("model", "stream", "error", "attempts", "needle"),
    [
        ("429", False, ag.TransientBackendError, 3, "HTTP 429, Retry-After '1'"),
        ("500", False, ag.TransientBackendError, 3, "HTTP 500: "),
        ("500", True, ag.TransientBackendError, 3, "injected 500"),
        ("malformed", False, ag.TransientBackendError, 3, "malformed response"),
        ("malformed", True, ag.TransientBackendError, 3, "malformed response"),
        ("drop", False, ag.TransientBackendError, 3, "connection failed"),
        ("drop", True, ag.TransientBackendError, 3, "connection failed"),
        ("truncate", False, ag.TransientBackendError, 3, "connection failed"),
        ("truncate", True, ag.TransientBackendError, 3, "connection failed"),
        ("400", False, ag.BackendError, 1, "HTTP 400: "),
        ("empty", True, ag.EmptyCompletion, 1, "returned no text"),
    ],
)
async def test_persistent_faults_fail_only_their_node(
    faults: FaultServer,
    model: str,
    stream: bool,
    error: type[ag.BackendError],
    attempts: int,
    needle: str,
) -> None:
    text = fault_graph(
        openai_model(faults.url, "ok"), openai_model(faults.url, model, stream=stream)
    )
    graph, result = await run_bounded(text)
    assert_only_faulty_failed(graph, result, faults, model, error, attempts, needle)


async def test_call_timeouts_cancel_the_request(faults: FaultServer) -> None:
    slow = openai_model(faults.url, "slow")
    text = fault_graph(openai_model(faults.url, "ok"), slow, attempts=2, call_s=0.3)
    _, result = await run_bounded(text)
    err = result.failed["faulty"]
    assert type(err) is ag.BackendTimeout and "timed out after 0.3s" in str(err)
    assert result.ok and faults.hits["slow"] == 2
    assert faults.wait_for_disconnects(2) == 2  # each timed-out call hung up


async def test_the_client_timeout_is_a_backend_timeout(faults: FaultServer) -> None:
    slow = openai_model(faults.url, "slow", request_timeout_s=0.3, stream=True)
    _, result = await run_bounded(fault_graph(openai_model(faults.url, "ok"), slow, attempts=2))
    err = result.failed["faulty"]
    assert type(err) is ag.BackendTimeout and "request_timeout_s=0.3" in str(err)
    assert faults.wait_for_disconnects(2) == 2


async def test_cancelling_a_stream_closes_it(faults: FaultServer) -> None:
    backend = OpenAIBackend("trickle", base_url=faults.url, stream=True)
    task = asyncio.create_task(backend.complete(request("hi")))
    async with asyncio.timeout(5):
        while not faults.hits["trickle"]:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the first chunk is in: the stream is open
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await backend.aclose()
    assert faults.wait_for_disconnects(1) == 1


async def test_streamed_usage_comes_from_the_last_chunk(faults: FaultServer) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url, stream=True)
    try:
        done = await backend.complete(request("one two three"))
    finally:
        await backend.aclose()
    assert done.text == "Answer: 42" and done.finish_reason == "stop"
    assert done.usage == ag.Usage(3, 3)
    assert faults.seen[0].body["stream_options"] == {"include_usage": True}


async def test_sampling_reaches_the_server(faults: FaultServer) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url, headers={"X-Team": "blue"})
    sampling = ag.Sampling(
        temperature=0.5, top_p=0.9, top_k=20, max_tokens=7, seed=10, stop=("\n",)
    )
    req = ag.CompletionRequest((ag.ChatMessage("user", "hi"),), sampling, sample_index=2)
    try:
        await backend.complete(req)
    finally:
        await backend.aclose()
    seen = faults.seen[0]
    assert seen.headers["x-team"] == "blue"
    assert seen.headers["authorization"] == "Bearer sk-no-key-required"
    body = {k: v for k, v in seen.body.items() if k not in ("messages", "model")}
    assert body == {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 20,
        "max_tokens": 7,
        "seed": ag.sample_seed(10, 2),
        "stop": ["\n"],
    }
    assert seen.body["messages"] == [{"role": "user", "content": "hi"}]


async def test_the_api_key_stays_secret(
    faults: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-5ecret-0123456789"
    monkeypatch.setenv("AG_TEST_OPENAI_KEY", key)
    # The "401" model quotes the Authorization header back in its error body.
    good = openai_model(faults.url, "ok", api_key_env="AG_TEST_OPENAI_KEY")
    bad = openai_model(faults.url, "401", api_key_env="AG_TEST_OPENAI_KEY")
    graph, result = await run_bounded(fault_graph(good, bad))
    assert {s.headers["authorization"] for s in faults.seen} == {f"Bearer {key}"}
    err = result.failed["faulty"]
    assert type(err) is ag.BackendError and "HTTP 401" in str(err) and "***" in str(err)
    assert faults.hits["401"] == 1  # not retried
    shown = [repr(graph), *map(repr, graph.backends.values())]
    shown += [b.id for b in graph.backends.values()]
    shown += [json.dumps(r.to_dict()) for r in result.trace]
    shown += [str(err), repr(err), *traceback.format_exception(err)]
    assert not [s for s in shown if key in s]


# --- usage, max_tokens, identity, seeds ---------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_reply_without_usage_has_unknown_usage(faults: FaultServer, stream: bool) -> None:
    # Not 0 tokens (nor, streamed, a token per chunk): the ledger charges the reservation.
    backend = OpenAIBackend("ok-nousage", base_url=faults.url, stream=stream)
    try:
        done = await backend.complete(request("one two three"))
    finally:
        await backend.aclose()
    assert done.text == "Answer: 42" and done.finish_reason == "stop"
    assert done.usage is None


async def test_a_stream_past_max_tokens_is_cut(faults: FaultServer) -> None:
    # "long" sends LONG_WORDS chunks whatever max_tokens says.
    backend = OpenAIBackend("long", base_url=faults.url, stream=True)
    try:
        async with asyncio.timeout(10):
            done = await backend.complete(request("hi", max_tokens=16))
    finally:
        await backend.aclose()
    assert done.text == "".join(LONG[:16]) and done.finish_reason == "length"
    assert done.usage is None  # cut before the usage chunk: the reservation is charged
    assert faults.wait_for_disconnects(1) == 1
    assert not faults.sent_in_full and faults.content_chunks["long"] < LONG_WORDS


async def test_a_stream_that_keeps_max_tokens_is_not_cut(faults: FaultServer) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url, stream=True)
    try:
        done = await backend.complete(request("one two three", max_tokens=3))  # 3 chunks
    finally:
        await backend.aclose()
    assert done.text == "Answer: 42" and done.finish_reason == "stop"
    assert done.usage == ag.Usage(3, 3)  # the usage chunk after the last content chunk


async def test_the_cache_follows_the_model_not_the_port(
    faults: FaultServer, tmp_path: Path
) -> None:
    def graph(url: str) -> ag.Graph:
        text = f"""
models:
  m: {openai_model(url, "ok")}
defaults:
  sampling: {{max_tokens: 8, temperature: 0.0, seed: 1}}
nodes:
  p: {{role: proposer, model: m}}
output: p
"""
        return ag.loads(text, cache=ag.CallCache(tmp_path / "calls.sqlite"))

    with serving() as moved:  # the same model, served on another port
        async with asyncio.timeout(30):
            first = await graph(faults.url).arun("What is 6 * 7?")
            again = await graph(moved.url).arun("What is 6 * 7?")
    assert first.answer == again.answer == "42"
    assert [r.cached for r in again.trace] == [True] and again.tokens == 0
    assert faults.hits["ok"] == 1 and moved.hits["ok"] == 0
    assert first.trace[0].backend == again.trace[0].backend == "openai:ok"


def test_slots_belong_to_the_server() -> None:
    a = OpenAIBackend("a", base_url="http://h:1/v1")
    assert a.resource == OpenAIBackend("b", base_url="http://h:1/v1").resource
    moved = OpenAIBackend("a", base_url="http://h:2/v1")
    assert a.resource != moved.resource and a.id == moved.id == "openai:a"
    assert isinstance(a, ag.BackendBase)


async def test_each_sample_sends_its_own_seed(faults: FaultServer) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url)
    calls = [(1, 0), (1, 1), (2, 0), (2, 1)]
    try:
        for seed, index in calls:
            req = request("hi", seed=seed)
            await backend.complete(ag.CompletionRequest(req.messages, req.sampling, index))
    finally:
        await backend.aclose()
    sent = [s.body["seed"] for s in faults.seen]
    assert sent == [ag.sample_seed(seed, index) for seed, index in calls]
    assert sent[0] == 1 and len(set(sent)) == 4  # (1, 1) and (2, 0) are different draws


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "field", "needle"),
    [
        ("{backend: openai, options: {base_url: 'http://h/v1'}}", "models.m", "needs 'model'"),
        ("{backend: openai, model: s}", "models.m.options.base_url", "missing required option"),
        (
            "{backend: openai, model: s, options: {base_url: 'http://h/v1', strem: true}}",
            "models.m.options.strem",
            "unknown option 'strem'; valid options: base_url, api_key_env, headers, "
            "request_timeout_s, stream, structured_output; did you mean 'stream'?",
        ),
        (
            "{backend: openai, model: s, options: {base_url: 'ftp://h'}}",
            "models.m.options.base_url",
            "'ftp://h' is not an http:// or https:// URL",
        ),
        (
            "{backend: openai, model: s, options: {base_url: 'http://u:pw@h/v1'}}",
            "models.m.options.base_url",
            "credentials in the URL would be recorded; use api_key_env or headers",
        ),
        (
            "{backend: openai, model: s, options: {base_url: 'http://h', request_timeout_s: 0}}",
            "models.m.options.request_timeout_s",
            "greater than 0 (got 0)",
        ),
        (
            "{backend: openai, model: s, options: {base_url: 'http://h', api_key_env: AG_NO_KEY}}",
            "models.m.options.api_key_env",
            "environment variable 'AG_NO_KEY' is not set",
        ),
    ],
)
def test_bad_openai_models_are_reported_in_place(model: str, field: str, needle: str) -> None:
    text = f"models:\n  m: {model}\nnodes:\n  p: {{role: proposer, model: m}}\noutput: p\n"
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text, source="g.yaml")
    assert info.value.field == field and info.value.line == 2
    assert needle in str(info.value) and "pw" not in str(info.value)


def test_importing_the_integrations_does_not_import_openai() -> None:
    code = "import sys, agentgraph.integrations; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_missing_openai_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ag.MissingDependency, match=r"pip install 'agentgraph\[openai\]'"):
        await backend.aopen()


CHOICE = {
    "type": "object",
    "properties": {"answer": {"enum": ["A", "B", "C", "D"]}},
    "required": ["answer"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("form", ["json_schema", "json_object"])
async def test_a_json_schema_is_sent_as_response_format(faults: FaultServer, form: str) -> None:
    backend = OpenAIBackend("ok", base_url=faults.url, structured_output=form)  # type: ignore[arg-type]
    assert backend.constraints == frozenset({"json_schema"})
    req = request("Pick a letter.")
    req.constraint = ag.OutputConstraint(json_schema=CHOICE)
    try:
        await backend.complete(req)
        await backend.complete(request("No constraint."))
    finally:
        await backend.aclose()
    constrained, plain = (seen.body for seen in faults.seen)
    if form == "json_schema":
        spec = {"name": "reply", "schema": CHOICE, "strict": True}
        assert constrained["response_format"] == {"type": "json_schema", "json_schema": spec}
    else:
        assert constrained["response_format"] == {"type": "json_object", "schema": CHOICE}
    assert "response_format" not in plain


def test_structured_output_off_declares_no_constraints() -> None:
    backend = OpenAIBackend("ok", base_url="http://127.0.0.1:9/v1", structured_output="off")
    assert backend.constraints == frozenset()


async def test_the_real_server_decodes_to_the_schema(llama_url: str) -> None:
    """llama-cpp-python's server turns the schema into a grammar: the reply is always
    valid, where the same model unconstrained answers in prose."""
    backend = OpenAIBackend(llama_server.MODEL, base_url=llama_url, structured_output="json_object")
    question = "Which letter comes first in the alphabet: A, B, C or D?"
    try:
        replies = []
        for seed in range(3):
            req = request(question, max_tokens=24, temperature=0.8, seed=seed)
            req.constraint = ag.OutputConstraint(json_schema=CHOICE)
            replies.append((await backend.complete(req)).text)
        free = await backend.complete(request(question, max_tokens=24))
    finally:
        await backend.aclose()
    assert all(json.loads(r)["answer"] in "ABCD" for r in replies), replies
    assert not free.text.lstrip().startswith("{")
