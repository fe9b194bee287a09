"""PNG plots of a finished search (``agentgraph tune --plots DIR``), with matplotlib (the
``plot`` extra): the search curve against evaluations and against tokens spent, and every
evaluated graph's score against latency and cost with the Pareto front marked."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgraph import MissingDependency

if TYPE_CHECKING:
    from ._tune import TuneResult

__all__ = ["check_matplotlib", "write_plots"]


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise MissingDependency(
            "--plots needs matplotlib, which is not installed; install it with: "
            "pip install 'agentgraph[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    return importlib.import_module("matplotlib.pyplot")


def check_matplotlib() -> None:
    """Fail before a search starts, not after it, when the plots cannot be drawn."""
    _pyplot()


def write_plots(result: TuneResult, folder: Path) -> list[Path]:
    """Write ``curve.png`` and ``front.png`` into ``folder`` (created); returns the paths."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    points = [p for p in result.curve if p.best_score is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, x, label in (
        (axes[0], [p.evaluations for p in points], "graphs evaluated"),
        (axes[1], [p.tokens for p in points], "tokens spent"),
    ):
        ax.step(x, [p.best_score for p in points], where="post")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best feasible score (pooled)")
    fig.suptitle("search curve")
    fig.tight_layout()
    curve = folder / "curve.png"
    fig.savefig(curve, dpi=120)
    plt.close(fig)

    front_ids = {id(e) for _, e in result.front}
    graphs = result.graphs
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, attr, label in (
        (axes[0], "latency_s", "mean latency per task (s)"),
        (axes[1], "cost_usd", "mean cost per task (USD)"),
    ):
        ax.scatter(
            [getattr(e, attr) for _, e in graphs], [e.score for _, e in graphs], s=10,
            alpha=0.4, label="evaluated",
        )  # fmt: skip
        on_front = [e for _, e in graphs if id(e) in front_ids]
        ax.scatter(
            [getattr(e, attr) for e in on_front], [e.score for e in on_front], s=30,
            color="tab:red", label="Pareto front",
        )  # fmt: skip
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (pooled over minibatches)")
    axes[0].legend()
    fig.suptitle("score, latency and cost of every graph evaluated")
    fig.tight_layout()
    front = folder / "front.png"
    fig.savefig(front, dpi=120)
    plt.close(fig)
    return [curve, front]
