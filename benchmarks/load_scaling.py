"""Graph-file loading benchmark for agentgraph: time and memory against file size.

``agentgraph.load_spec`` (read, parse, locate every field, validate the schema and the
graph) on generated graph files of 1,000, 10,000 and 60,000 nodes, in three shapes:

- ``chain``: each node a proposer reading the one before (about 65 bytes a node; 60,000
  nodes make the 4 MB file of the issue that once took 17 s);
- ``fan``: proposers that all feed one vote node, whose ``inputs`` list names every one;
- ``prompts``: the chain with a prompt, a system message and a seed on every node (about
  230 bytes a node: 14 MB at 60,000 nodes; a 10 MB file once took 148 s and 4.5 GB).

Time is the median of the timed loads (``time.perf_counter``, after a warm-up load of each
shape); peak memory is traced by ``tracemalloc`` in a separate load (it slows loading, so
it is not timed; ``--quick`` skips it at the largest size). Target: loading is linear, so
the time per node at 60,000 nodes is at most 1.5 x the time per node at 1,000, for every
shape.

Alias bombs ("billion laughs": nine levels of nine aliases, 520 bytes that stand for 820
million nodes, and one of twelve levels of twelve) must be refused, with a
``GraphValidationError`` naming the line, in under 1 s each.

The last line is ``targets met: yes`` or ``targets met: no``.

Run:  .venv/bin/python benchmarks/load_scaling.py [--quick] [--out FILE]
(JSON goes to benchmarks/results/load_scaling.json unless ``--out`` is given; ``--quick``
times the larger sizes once and takes under a minute.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

import agentgraph

SIZES = (1_000, 10_000, 60_000)
RATIO_TARGET = 1.5  # time per node at the largest size / at the smallest
BOMB_TARGET_S = 1.0
REPEATS = {False: {1_000: 15, 10_000: 5, 60_000: 3}, True: {1_000: 5, 10_000: 1, 60_000: 1}}

HEAD = """\
schema: agentgraph/v1
name: {name}
models:
  fake:
    backend: scripted
    options: {{responses: ["Answer: 1"]}}
defaults:
  sampling: {{max_tokens: 64, temperature: 0.7}}
nodes:
"""


def chain(n: int) -> str:
    parts = [HEAD.format(name="chain")]
    for i in range(n):
        inputs = f"\n    inputs: [n{i - 1}]" if i else ""
        parts.append(f"  n{i}:\n    role: proposer\n    model: fake{inputs}\n")
    parts.append(f"output: n{n - 1}\n")
    return "".join(parts)


def fan(n: int) -> str:
    parts = [HEAD.format(name="fan")]
    parts.extend(f"  p{i}: {{role: proposer, model: fake}}\n" for i in range(n - 1))
    names = ", ".join(f"p{i}" for i in range(n - 1))
    parts.append(f"  vote:\n    role: vote\n    inputs: [{names}]\noutput: vote\n")
    return "".join(parts)


def prompts(n: int) -> str:
    parts = [HEAD.format(name="prompts")]
    for i in range(n):
        inputs = f"\n    inputs: [n{i - 1}]" if i else ""
        parts.append(
            f"  n{i}:\n    role: proposer\n    model: fake\n"
            f"    system: You are step {i} of a long chain of careful workers.\n"
            f"    prompt: 'Improve the answer so far to: {{question}} (step {i})'\n"
            f"    sampling: {{seed: {i}}}{inputs}\n"
        )
    parts.append(f"output: n{n - 1}\n")
    return "".join(parts)


SHAPES: dict[str, Callable[[int], str]] = {"chain": chain, "fan": fan, "prompts": prompts}


def laughs(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\nschema: agentgraph/v1\n"


def expanded(levels: int, width: int) -> int:
    """Nodes the last anchor of :func:`laughs` stands for, aliases expanded."""
    size = 2  # [lol]
    for _ in range(levels):
        size = 1 + width * size
    return size


def time_load(path: Path, repeats: int, warm_up: bool) -> list[float]:
    if warm_up:  # imports, pydantic's first validations of each model
        agentgraph.load_spec(path)
    times = []
    for _ in range(repeats):
        gc.collect()
        start = perf_counter()
        agentgraph.load_spec(path)
        times.append(perf_counter() - start)
    return times


def peak_memory(path: Path) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        agentgraph.load_spec(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure_shapes(quick: bool, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for shape, make in SHAPES.items():
        first: float | None = None
        for n in SIZES:
            path = folder / f"{shape}_{n}.yaml"
            path.write_text(make(n), encoding="utf-8")
            times = time_load(path, REPEATS[quick][n], warm_up=first is None)
            median = statistics.median(times)
            per_node = median / n * 1e6
            first = per_node if first is None else first
            ratio = per_node / first
            largest = n == SIZES[-1]
            rows.append(
                {
                    "shape": shape,
                    "nodes": n,
                    "bytes": path.stat().st_size,
                    "load_s": times,
                    "median_s": median,
                    "us_per_node": per_node,
                    "ratio_to_smallest": ratio,
                    "peak_mib": None if quick and largest else peak_memory(path) / 2**20,
                    "target": f"ratio <= {RATIO_TARGET}" if largest else None,
                    "passed": ratio <= RATIO_TARGET if largest else None,
                }
            )
    return rows


def measure_bombs() -> list[dict[str, Any]]:
    rows = []
    for levels, width in ((9, 9), (12, 12)):
        text = laughs(levels, width)
        start = perf_counter()
        try:
            agentgraph.loads_spec(text, source="bomb.yaml")
            error, line = None, None
        except agentgraph.GraphValidationError as exc:
            error, line = str(exc), exc.line
        took = perf_counter() - start
        rows.append(
            {
                "levels": levels,
                "width": width,
                "bytes": len(text.encode()),
                "expands_to": expanded(levels, width),
                "refused_s": took,
                "error": error,
                "passed": error is not None and line is not None and took < BOMB_TARGET_S,
            }
        )
    return rows


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_tables(rows: list[dict[str, Any]], bombs: list[dict[str, Any]]) -> None:
    print(
        f"{'shape':<9}{'nodes':>7}{'MB':>7}{'median s':>10}{'us/node':>9}{'x 1k':>7}"
        f"{'peak MiB':>10}  {'target':<14}result"
    )
    for r in rows:
        result = "-" if r["passed"] is None else "PASS" if r["passed"] else "FAIL"
        print(
            f"{r['shape']:<9}{r['nodes']:>7}{r['bytes'] / 1e6:>7.2f}{r['median_s']:>10.3f}"
            f"{r['us_per_node']:>9.1f}{r['ratio_to_smallest']:>7.2f}{fmt(r['peak_mib']):>10}  "
            f"{r['target'] or '':<14}{result}"
        )
    print()
    print(f"{'alias bomb':<12}{'bytes':>7}{'expands to':>20}{'refused in s':>14}  result")
    for b in bombs:
        print(
            f"{b['levels']:>2} x {b['width']:<7}{b['bytes']:>7}{b['expands_to']:>20,}"
            f"{b['refused_s']:>14.4f}  {'PASS' if b['passed'] else 'FAIL'}"
        )
        print(f"  {b['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed load a size")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "load_scaling.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = measure_shapes(args.quick, Path(folder))
    bombs = measure_bombs()
    print_tables(rows, bombs)
    met = all(r["passed"] for r in rows if r["passed"] is not None) and all(
        b["passed"] for b in bombs
    )
    report = {
        "benchmark": "load_scaling",
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "versions": {"agentgraph": agentgraph.__version__, "pyyaml": _pyyaml()},
        "targets": {"ratio_per_node_max": RATIO_TARGET, "bomb_refused_s_max": BOMB_TARGET_S},
        "repeats": {str(n): r for n, r in REPEATS[args.quick].items()},
        "targets_met": met,
        "results": rows,
        "alias_bombs": bombs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    print(f"targets met: {'yes' if met else 'no'}")


def _pyyaml() -> str:
    import yaml

    return f"{yaml.__version__}{' (libyaml)' if getattr(yaml, '__with_libyaml__', False) else ''}"


if __name__ == "__main__":
    main()
