"""The search store: append-only records that survive kill -9 and refuse another search."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentgraph.search._store import Asked, SearchStore, StoreError

CONFIG = {"space": "s.yaml", "tasks": "gsm8k:train[:8]", "seed": 1}


def test_records_come_back_after_reopening(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "s.sqlite", config=CONFIG)
    asked = [Asked(0, i, {"width": i}, f"name: g{i}\n", -1.5 * i) for i in range(3)]
    store.record_asked(asked)
    store.record_evaluation(0, 1, {"score": 0.5})
    store.record_state(0, {"params": [1, 2]})
    store.close()
    again = SearchStore(tmp_path / "s.sqlite", config=dict(CONFIG))
    assert again.asked(0) == asked and again.asked(1) == []
    assert [(e.slot, e.result) for e in again.evaluations(0)] == [(1, {"score": 0.5})]
    assert again.last_state() == (0, {"params": [1, 2]})
    assert [(a.slot, r) for a, r in again.history()] == [(1, {"score": 0.5})]


def test_a_store_of_another_search_is_refused(tmp_path: Path) -> None:
    SearchStore(tmp_path / "s.sqlite", config=CONFIG).close()
    with pytest.raises(StoreError, match="holds another search"):
        SearchStore(tmp_path / "s.sqlite", config={**CONFIG, "seed": 2})


def test_records_are_never_overwritten(tmp_path: Path) -> None:
    store = SearchStore(tmp_path / "s.sqlite", config=CONFIG)
    store.record_evaluation(0, 0, {"score": 1.0})
    with pytest.raises(Exception, match="UNIQUE"):
        store.record_evaluation(0, 0, {"score": 0.0})
    assert store.evaluations()[0].result == {"score": 1.0}


@pytest.mark.parametrize("content", [b"not sqlite at all" * 100, None])
def test_a_file_that_is_no_store_is_a_clear_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "x.sqlite"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(StoreError, match=str(path)):
        SearchStore(path, config=CONFIG)


WRITER = """
import sys
from agentgraph.search._store import SearchStore
store = SearchStore(sys.argv[1], config={"space": "s.yaml", "tasks": "gsm8k:train[:8]", "seed": 1})
for i in range(100000):
    store.record_evaluation(0, i, {"score": i})
    print(i, flush=True)
"""


def test_kill_9_loses_no_committed_record(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        printed = -1
        deadline = time.monotonic() + 60
        while printed < 50 and time.monotonic() < deadline:
            printed = int(proc.stdout.readline())
        proc.kill()
    slots = [e.slot for e in SearchStore(path, config=CONFIG).evaluations()]
    assert slots == list(range(len(slots))) and len(slots) > printed  # printed after commit
