"""Dry-run estimates, latency profiles (measured on the real model) and the profile store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import agentgraph as ag

from .conftest import SMOL_REF

PROFILE = ag.LatencyProfile(overhead_s=0.5, prefill_tok_s=1000.0, decode_tok_s=10.0)


def fan_in(slots: int, **model: object) -> tuple[ag.Graph, ag.ScriptedBackend]:
    backend = ag.ScriptedBackend("Answer: 1", slots=slots, price=ag.Price(output_per_mtok=100.0))
    spec = ag.GraphSpec(
        models={"m": ag.ModelSpec(backend="scripted", **model)},  # type: ignore[arg-type]
        defaults=ag.Defaults(sampling=ag.Sampling(max_tokens=20)),
        nodes={
            "a": ag.NodeSpec(role="proposer", model="m"),
            "b": ag.NodeSpec(role="proposer", model="m"),
            "c": ag.NodeSpec(role="synthesizer", model="m", inputs=("a", "b")),
        },
        output="c",
    )
    return ag.Graph(spec, backends={"m": backend}), backend


async def test_estimate_calls_no_model_and_uses_price_and_profile(tmp_path: Path) -> None:
    graph, backend = fan_in(slots=8, profile=PROFILE)
    est = await graph.aestimate("What is 2 + 2?", profiles=ag.ProfileStore(tmp_path / "p.yaml"))
    assert backend.calls == []
    assert [n.calls for n in est.nodes.values()] == [1, 1, 1]
    assert all(n.completion_tokens == 20 for n in est.nodes.values())  # max_tokens
    assert est.nodes["c"].prompt_tokens > est.nodes["a"].prompt_tokens  # sees the candidates
    assert est.tokens == sum(n.prompt_tokens + n.completion_tokens for n in est.nodes.values())
    assert est.cost == pytest.approx(60 * 100 / 1e6)
    a, c = est.nodes["a"], est.nodes["c"]
    assert a.latency_s == pytest.approx(PROFILE.predict(a.prompt_tokens, 20))
    # Enough slots: the critical path a -> c.
    assert est.latency_s == pytest.approx(a.latency_s + c.latency_s)
    assert est.unprofiled == ()


async def test_a_single_slot_serializes_the_estimate(tmp_path: Path) -> None:
    graph, _ = fan_in(slots=1, profile=PROFILE)
    est = await graph.aestimate("q", profiles=ag.ProfileStore(tmp_path / "p.yaml"))
    assert est.latency_s == pytest.approx(sum(n.latency_s or 0 for n in est.nodes.values()))


async def test_a_batch_speedup_prices_width_between_one_slot_and_many(tmp_path: Path) -> None:
    """Eight slots that get through only 1.2 calls' work in the time of one (a local model
    decoding calls together on few cores): the three calls queue for the model."""
    batched = PROFILE.model_copy(update={"batch_speedup": 1.2})
    graph, _ = fan_in(slots=8, profile=batched)
    est = await graph.aestimate("q", profiles=ag.ProfileStore(tmp_path / "p.yaml"))
    work = sum(n.latency_s or 0 for n in est.nodes.values())
    path = (est.nodes["a"].latency_s or 0) + (est.nodes["c"].latency_s or 0)
    assert est.latency_s == pytest.approx(max(path, work / 1.2))
    assert path < est.latency_s < work


class _Slots:
    """A slot resource of its own that runs on a shared ``compute`` (as local llama.cpp
    models do on their one thread)."""

    def __init__(self, compute: object) -> None:
        self.compute = compute


class _OnSharedCompute(ag.ScriptedBackend):
    def __init__(self, compute: object) -> None:
        super().__init__("Answer: 1", slots=1)
        self._own = _Slots(compute)

    @property
    def resource(self) -> object:
        return self._own


@pytest.mark.parametrize("shared", [True, False])
async def test_models_on_one_compute_queue_together(tmp_path: Path, shared: bool) -> None:
    """Two one-slot models: on separate computes a and b run side by side; on one shared
    compute (two local models on the one llama.cpp thread) their work adds up."""
    thread = object()
    one, two = _OnSharedCompute(thread), _OnSharedCompute(thread if shared else object())
    spec = ag.GraphSpec(
        models={
            "m1": ag.ModelSpec(backend="scripted", profile=PROFILE),
            "m2": ag.ModelSpec(backend="scripted", profile=PROFILE),
        },
        defaults=ag.Defaults(sampling=ag.Sampling(max_tokens=20)),
        nodes={
            "a": ag.NodeSpec(role="proposer", model="m1"),
            "b": ag.NodeSpec(role="proposer", model="m2"),
            "c": ag.NodeSpec(role="synthesizer", model="m1", inputs=("a", "b")),
        },
        output="c",
    )
    graph = ag.Graph(spec, backends={"m1": one, "m2": two})
    est = await graph.aestimate("q", profiles=ag.ProfileStore(tmp_path / "p.yaml"))
    a, b, c = (est.nodes[n].latency_s or 0 for n in "abc")
    assert est.latency_s == pytest.approx(a + b + c if shared else max(a, b) + c)


async def test_unprofiled_models_have_unknown_latency_and_the_store_fills_in(
    tmp_path: Path,
) -> None:
    graph, backend = fan_in(slots=8)
    store = ag.ProfileStore(tmp_path / "profiles.yaml")
    est = await graph.aestimate("q", profiles=store)
    assert est.latency_s is None and est.unprofiled == ("m",) and est.tokens > 0
    store.put(backend.id, PROFILE)
    assert ag.ProfileStore(tmp_path / "profiles.yaml").get(backend.id) == PROFILE
    est = await graph.aestimate("q", profiles=store)
    assert est.latency_s is not None and est.latency_s > 2 * PROFILE.overhead_s


async def test_routers_are_estimated_as_if_every_branch_ran(tmp_path: Path) -> None:
    text = """
models: {m: {backend: scripted, profile: {prefill_tok_s: 1000, decode_tok_s: 10}}}
defaults: {sampling: {max_tokens: 10}}
nodes:
  small: {role: proposer, model: m}
  gate:
    {role: router, inputs: [small], params: {mode: score, threshold: 0.5, pass: [], fail: [big]}}
  big: {role: proposer, model: m, inputs: [gate]}
  out: {role: select, inputs: [small, big]}
output: out
"""
    graph = ag.loads(text)
    est = await graph.aestimate("q", profiles=ag.ProfileStore(tmp_path / "p.yaml"))
    assert est.nodes["big"].calls == 1


async def test_profile_of_the_real_model_predicts_a_real_run(tmp_path: Path) -> None:
    text = f"""
models: {{smol: {{backend: llama_cpp, path: {SMOL_REF}}}}}
defaults: {{sampling: {{max_tokens: 24, temperature: 0}}}}
nodes:
  a: {{role: proposer, model: smol}}
  b: {{role: proposer, model: smol, inputs: [a]}}
output: b
"""
    graph = ag.loads(text)
    profile = await ag.ameasure_profile(graph.backends["smol"], repeats=2)
    # Rates measured on a shared machine: positive, whatever else runs beside them.
    assert profile.prefill_tok_s > 0 and profile.decode_tok_s > 0
    # Its slots decode together: the speedup of a full batch is measured, within [1, slots].
    slots = graph.backends["smol"].slots
    assert profile.batch_speedup is not None and 1.0 <= profile.batch_speedup <= slots
    store = ag.ProfileStore(tmp_path / "p.yaml")
    store.put(graph.backends["smol"].id, profile)
    est = await graph.aestimate("Name three colours.", profiles=store)
    run = await graph.arun("Name three colours.")
    # The estimate is the measured profile applied to each call, summed along the chain
    # (timings on a shared machine vary; the figures and the arithmetic do not).
    a, b = est.nodes["a"], est.nodes["b"]
    for n in (a, b):
        assert n.calls == 1 and n.completion_tokens == 24
        assert n.latency_s == pytest.approx(profile.predict(n.prompt_tokens, n.completion_tokens))
    assert est.latency_s == pytest.approx(a.latency_s + b.latency_s)  # type: ignore[operator]
    assert b.prompt_tokens > a.prompt_tokens  # b reads a's answer
    # Answers are at most max_tokens long: the estimate bounds the run's completions.
    used = {r.node: r.completion_tokens for r in run.trace.records}
    assert set(used) == {"a", "b"} and all(0 < t <= 24 for t in used.values())


def test_cli_profile_and_estimate(tmp_path: Path) -> None:
    store = tmp_path / "profiles.yaml"
    graph = Path(__file__).resolve().parent.parent / "examples" / "quickstart.yaml"
    prof = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentgraph",
            "profile",
            str(graph),
            "--repeats",
            "1",
            "--profiles",
            str(store),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert prof.returncode == 0, prof.stderr
    assert "prefill_tok_s" in prof.stdout and store.is_file()
    gguf = subprocess.run(
        [sys.executable, "-m", "agentgraph", "profile", SMOL_REF, "--repeats", "1",
         "--profiles", str(tmp_path / "bare.yaml")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert gguf.returncode == 0, gguf.stderr
    # The same model file, so the same key: a profile measured either way serves both.
    assert (
        yaml.safe_load((tmp_path / "bare.yaml").read_text()).keys()
        == yaml.safe_load(store.read_text()).keys()
    )
    est = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentgraph",
            "estimate",
            str(graph),
            "What is 1 + 1?",
            "--profiles",
            str(store),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert est.returncode == 0, est.stderr
    last = est.stdout.splitlines()[-1].split()
    assert last[0] == "(run)" and float(last[-1]) > 0
