"""The http backend against a real llama.cpp server and a fault-injecting server."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from agentgraph.integrations import HttpBackend
from agentgraph.integrations._llama_cpp import plain_prompt

import agentgraph as ag

from .conftest import request
from .faultserver import FaultServer, assert_only_faulty_failed, fault_graph, run_bounded

COMPLETIONS = {
    "text": "choices.0.text",
    "prompt_tokens": "usage.prompt_tokens",
    "completion_tokens": "usage.completion_tokens",
    "finish_reason": "choices.0.finish_reason",
}
CHAT = {
    "text": "choices.0.message.content",
    "prompt_tokens": "usage.prompt_tokens",
    "completion_tokens": "usage.completion_tokens",
}


def http_model(url: str, model: str, *, response: dict[str, str] = CHAT, **options: Any) -> str:
    """A flow mapping for a ``backend: http`` model posting chat requests to ``url``."""
    opts = {
        "url": f"{url}/chat/completions",
        "request": {"model": model, "messages": "{messages}", "max_tokens": "{max_tokens}"},
        "response": response,
        **options,
    }
    return f"{{backend: http, options: {json.dumps(opts)}}}"


# --- a real server ------------------------------------------------------------------


async def test_completions_endpoint_with_usage_paths(llama_url: str) -> None:
    backend = HttpBackend(
        f"{llama_url}/completions",
        request={
            "prompt": "{prompt}",
            "max_tokens": "{max_tokens}",
            "temperature": "{temperature}",
            "seed": "{seed}",
            "stop": "{stop}",
        },
        response=COMPLETIONS,
    )
    try:
        done = await backend.complete(request("The capital of France is"))
    finally:
        await backend.aclose()
    assert done.text.strip() and done.finish_reason in ("stop", "length")
    assert done.usage is not None
    assert done.usage.prompt_tokens >= 5 and 1 <= done.usage.completion_tokens <= 8
    assert backend.id.startswith(f"http:{llama_url}/completions:")


async def test_a_graph_runs_on_the_server(llama_url: str) -> None:
    opts = {"url": f"{llama_url}/completions", "response": COMPLETIONS}
    text = f"""
models:
  raw: {{backend: http, options: {json.dumps(opts)}}}
defaults:
  sampling: {{max_tokens: 10, temperature: 0.0, seed: 5}}
nodes:
  a: {{role: proposer, model: raw}}
  final: {{role: synthesizer, model: raw, inputs: [a]}}
output: final
"""
    _, result = await run_bounded(text)  # the default request template
    assert result.ok, result.failed
    assert result.answer and result.nodes["a"].message.text
    for rec in result.trace:
        assert rec.attempts == 1 and rec.prompt_tokens > 5 and 1 <= rec.completion_tokens <= 10
    assert result.tokens == sum(r.tokens for r in result.trace) > 0


# --- request templates and response paths -------------------------------------------


async def test_the_template_is_filled_with_typed_values(faults: FaultServer) -> None:
    template = {
        "model": "echo",
        "messages": "{messages}",
        "prompt": "{prompt}",
        "params": {
            "max_tokens": "{max_tokens}",
            "temperature": "{temperature}",
            "top_p": "{top_p}",
            "stop": "{stop}",
        },
        "seeds": ["{seed}", "{top_k}", "fixed"],
        "note": "say {prompt} as written",
        "n": 2,
        "flag": None,
    }
    backend = HttpBackend(f"{faults.url}/chat/completions", request=template, response=CHAT)
    messages = (ag.ChatMessage("system", "Be brief."), ag.ChatMessage("user", "Hi?"))
    sampling = ag.Sampling(max_tokens=5, temperature=0.5, seed=7)
    try:
        done = await backend.complete(ag.CompletionRequest(messages, sampling, sample_index=2))
    finally:
        await backend.aclose()
    assert json.loads(done.text) == {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi?"},
        ],
        "prompt": plain_prompt(messages),
        "params": {"max_tokens": 5, "temperature": 0.5},  # top_p and stop are unset
        "seeds": [ag.sample_seed(7, 2), "fixed"],  # top_k unset
        "note": "say {prompt} as written",
        "n": 2,
        "flag": None,
    }
    assert done.usage == ag.Usage(3, 1)  # words in the messages, as the server counts


@pytest.mark.parametrize(
    ("header", "sent"),
    [("Authorization", "Bearer sk-http-0123456789"), ("X-Api-Key", "sk-http-0123456789")],
)
async def test_the_key_goes_into_its_header(
    faults: FaultServer, monkeypatch: pytest.MonkeyPatch, header: str, sent: str
) -> None:
    monkeypatch.setenv("AG_TEST_HTTP_KEY", "sk-http-0123456789")
    backend = HttpBackend(
        f"{faults.url}/chat/completions",
        request={"model": "401", "messages": "{messages}"},
        response=CHAT,
        headers={"X-Team": "blue"},
        api_key_env="AG_TEST_HTTP_KEY",
        api_key_header=header,
    )
    with pytest.raises(ag.BackendError) as info:
        try:
            await backend.complete(request("hi"))
        finally:
            await backend.aclose()
    seen = faults.seen[0].headers
    assert seen[header.lower()] == sent and seen["x-team"] == "blue"
    # The server quoted the key back; the error does not.
    assert type(info.value) is ag.BackendError and "HTTP 401" in str(info.value)
    assert "sk-http-0123456789" not in str(info.value) + repr(backend) + backend.id


async def test_a_missing_response_path_names_what_is_there(faults: FaultServer) -> None:
    paths = {**CHAT, "text": "choices.0.message.text"}
    text = fault_graph(http_model(faults.url, "ok"), http_model(faults.url, "ok-2", response=paths))
    _, result = await run_bounded(text)
    err = result.failed["faulty"]
    # A reply of the wrong shape is a garbled body: retried, as the openai backend does.
    assert type(err) is ag.TransientBackendError and faults.hits["ok-2"] == 3
    assert "malformed response (no 'choices.0.message.text'" in str(err)
    assert "no key 'text' at 'choices.0.message'; keys there: 'role', 'content'" in str(err)
    assert result.answer == "42"


@pytest.mark.parametrize(
    ("model", "paths"),
    [
        ("ok", {"text": CHAT["text"]}),  # no token count paths configured
        ("ok", {**CHAT, "prompt_tokens": None}),  # only one of them
        ("ok-nousage", CHAT),  # configured, but the reply has no usage
    ],
)
async def test_unknown_usage_is_none_not_zero(
    faults: FaultServer, model: str, paths: dict[str, Any]
) -> None:
    backend = HttpBackend(
        f"{faults.url}/chat/completions",
        request={"model": model, "messages": "{messages}"},
        response=paths,
    )
    try:
        done = await backend.complete(request("one two three"))
    finally:
        await backend.aclose()
    assert done.text == "Answer: 42" and done.usage is None  # the ledger charges the reservation


async def test_a_token_count_that_is_not_a_count_fails_the_call(faults: FaultServer) -> None:
    paths = {**CHAT, "completion_tokens": "choices.0.message.content"}
    backend = HttpBackend(
        f"{faults.url}/chat/completions",
        request={"model": "ok", "messages": "{messages}"},
        response=paths,
    )
    with pytest.raises(ag.TransientBackendError, match="holds 'Answer: 42', not a token count"):
        try:
            await backend.complete(request("hi"))
        finally:
            await backend.aclose()


async def test_calls_respect_slots(faults: FaultServer) -> None:
    model = http_model(faults.url, "wait-150")[:-1] + ", slots: 2}"
    nodes = "\n".join(f"  p{i}: {{role: proposer, model: m}}" for i in range(5))
    text = f"models:\n  m: {model}\nnodes:\n{nodes}\n  f: {{role: synthesizer, model: m, "
    text += "inputs: [p0, p1, p2, p3, p4]}\noutput: f\n"
    _, result = await run_bounded(text)
    assert result.ok, result.failed
    assert faults.hits["wait-150"] == 6 and faults.max_in_flight == 2


# --- faults -------------------------------------------------------------------------


async def test_transient_faults_are_retried(faults: FaultServer) -> None:
    text = fault_graph(http_model(faults.url, "ok"), http_model(faults.url, "flaky-2"))
    _, result = await run_bounded(text)
    assert result.ok and result.answer == "42", result.failed
    (rec,) = [r for r in result.trace if r.node == "faulty"]
    assert rec.attempts == 3 and faults.hits["flaky-2"] == 3
    assert rec.prompt_tokens > 10 and rec.completion_tokens == 3


@pytest.mark.parametrize(
    ("model", "error", "attempts", "needle"),
    [
        ("429", ag.TransientBackendError, 3, "HTTP 429, Retry-After '1'"),
        ("500", ag.TransientBackendError, 3, "injected 500"),
        ("malformed", ag.TransientBackendError, 3, "malformed response (invalid JSON"),
        ("drop", ag.TransientBackendError, 3, "connection failed (RemoteProtocolError"),
        ("truncate", ag.TransientBackendError, 3, "connection failed (RemoteProtocolError"),
        ("400", ag.BackendError, 1, "HTTP 400: "),
        ("empty", ag.EmptyCompletion, 1, "returned no text"),
    ],
)
async def test_persistent_faults_fail_only_their_node(
    faults: FaultServer, model: str, error: type[ag.BackendError], attempts: int, needle: str
) -> None:
    text = fault_graph(http_model(faults.url, "ok"), http_model(faults.url, model))
    graph, result = await run_bounded(text)
    assert_only_faulty_failed(graph, result, faults, model, error, attempts, needle)


@pytest.mark.parametrize("client_timeout", [False, True])
async def test_timeouts_cancel_the_request(faults: FaultServer, client_timeout: bool) -> None:
    # Either the executor's call_s (0.3 s) or the client's request_timeout_s ends the call.
    opts: dict[str, Any] = {"request_timeout_s": 0.3} if client_timeout else {}
    bad = http_model(faults.url, "slow", **opts)
    good = http_model(faults.url, "ok")
    call_s = 5.0 if client_timeout else 0.3
    _, result = await run_bounded(fault_graph(good, bad, attempts=2, call_s=call_s))
    err = result.failed["faulty"]
    assert type(err) is ag.BackendTimeout and result.answer == "42"
    needle = "request_timeout_s=0.3" if client_timeout else "timed out after 0.3s"
    assert needle in str(err)
    assert faults.wait_for_disconnects(2) == 2  # each timed-out call hung up


# --- configuration ------------------------------------------------------------------

URL = "url: 'http://h/x'"
RESP = "response: {text: t}"


@pytest.mark.parametrize(
    ("options", "field", "needle"),
    [
        (RESP, "models.m.options.url", "missing required option 'url'"),
        (URL, "models.m.options.response", "missing required option 'response'"),
        (
            f"{URL}, response: {{txt: t}}",
            "models.m.options.response.txt",
            "unknown option 'txt'; valid options: text, prompt_tokens, completion_tokens, "
            "finish_reason; did you mean 'text'?",
        ),
        (
            f"{URL}, response: {{text: 'choices..text'}}",
            "models.m.options.response.text",
            "'choices..text' is not a dotted path",
        ),
        (
            f"{URL}, {RESP}, request: {{prompt: '{{promt}}'}}",
            "models.m.options.request.prompt",
            "unknown placeholder '{promt}'; did you mean '{prompt}'?; valid placeholders: "
            "{prompt}, {messages}, {model}, {max_tokens}",
        ),
        (
            f"{URL}, {RESP}, request: {{a: [x, {{b: '{{nope}}'}}]}}",
            "models.m.options.request.a[1].b",
            "unknown placeholder '{nope}'",
        ),
        (
            f"{URL}, {RESP}, request: {{model: '{{model}}'}}",
            "models.m.options.request.model",
            "the model sets no 'model' name",
        ),
        (f"{URL}, {RESP}, api_key_env: AG_NO_KEY", "models.m.options.api_key_env", "'AG_NO_KEY'"),
        (
            f"{URL}, {RESP}, methd: GET",
            "models.m.options.methd",
            "valid options: url, response, api_key",
        ),
    ],
)
def test_bad_http_models_are_reported_in_place(options: str, field: str, needle: str) -> None:
    model = f"{{backend: http, options: {{{options}}}}}"
    text = f"models:\n  m: {model}\nnodes:\n  p: {{role: proposer, model: m}}\noutput: p\n"
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text, source="g.yaml")
    assert info.value.field == field and info.value.line == 2
    assert needle in str(info.value)


def test_a_request_template_must_be_plain_json() -> None:
    # YAML dates load as strings, so only Python code can hand over such a value.
    with pytest.raises(ag.GraphValidationError, match="the request template must be plain JSON"):
        HttpBackend("http://h/x", response={"text": "t"}, request={"day": datetime.date.today()})


def test_the_id_follows_what_shapes_the_answer() -> None:
    def backend(**kw: Any) -> HttpBackend:
        return HttpBackend("http://h/x", response={"text": "t"}, **kw)

    assert backend().id == backend(headers={"A": "b"}, request_timeout_s=5).id
    assert backend().id != backend(request={"prompt": "{prompt}"}).id
    assert (
        backend(model="a", request={"m": "{model}"}).id
        != backend(model="b", request={"m": "{model}"}).id
    )
    assert backend().resource == backend(model="x").resource  # one server, one pool
