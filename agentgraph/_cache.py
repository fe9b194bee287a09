"""A content-addressed cache of model calls, in SQLite.

The key covers the backend's identity (kind + model file fingerprint or served name), every
sampling parameter, the messages and the sample index, so a hit is only ever returned for
the very same call. Runs and searches share one file; WAL mode lets several processes use
it at once. A hit is free: the ledger charges it 0 tokens and 0 money, and the trace marks
it ``cached`` beside the tokens, cost and latency of the call when it was made.

The key never depends on budget state: a run looks up the request as its role built it, and
an answer stored after the ledger capped ``max_tokens`` is filed under the request as built
when it ended on its own (not cut by the cap). SQLite work runs on the cache's own thread,
never on the event loop. Identical calls in flight at once run once (single-flight): the
executor registers each call it makes in :attr:`CallCache.flights`, and others await it.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from ._model import Completion, CompletionRequest, Usage

__all__ = ["CacheMode", "CallCache"]

CacheMode = Literal["read_write", "read_only", "replay"]
"""``read_write``: look up, store misses. ``read_only``: look up, store nothing.
``replay``: look up; a miss is an error (:class:`ReplayMiss`), nothing reaches a model."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class CallCache:
    """``CallCache("calls.sqlite")``; ``CallCache(":memory:")`` for one process only."""

    def __init__(self, path: str | Path, *, mode: CacheMode = "read_write") -> None:
        if mode not in ("read_write", "read_only", "replay"):
            raise ValueError(
                f"unknown cache mode {mode!r}; valid modes: 'read_write', 'read_only', 'replay'"
            )
        self.path = str(path)
        self.mode: CacheMode = mode
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._lock = threading.Lock()  # one connection, used from the loop and from threads
        with self._lock:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
            self._db.commit()
        self.hits = 0
        self.misses = 0
        self._worker: ThreadPoolExecutor | None = None
        self.flights: dict[str, asyncio.Future[Completion | None]] = {}
        """Calls in flight by key: their results, or None if they failed."""

    @staticmethod
    def key(backend_id: str, request: CompletionRequest) -> str:
        return hashlib.sha256(f"{backend_id}\n{request.key()}".encode()).hexdigest()

    def get(self, backend_id: str, request: CompletionRequest) -> Completion | None:
        return self.lookup(self.key(backend_id, request))

    def lookup(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, latency_s, finish_reason "
                "FROM calls WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        text, prompt_tokens, completion_tokens, latency, finish = row
        # The recorded usage and latency are the call's true figures; a hit is charged nothing.
        return Completion(text, Usage(prompt_tokens, completion_tokens), latency, True, finish)

    def put(self, backend_id: str, request: CompletionRequest, done: Completion) -> None:
        self.store(self.key(backend_id, request), backend_id, done)

    def store(self, key: str, backend_id: str, done: Completion) -> None:
        if self.mode != "read_write" or done.cached:
            return
        usage = done.usage or Usage()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, backend, text, prompt_tokens, "
                "completion_tokens, latency_s, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    backend_id,
                    done.text,
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    done.latency_s,
                    done.finish_reason,
                ),
            )
            self._db.commit()

    async def alookup(self, key: str) -> Completion | None:
        """:meth:`lookup` on the cache's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread(), self.lookup, key)

    async def astore(self, key: str, backend_id: str, done: Completion) -> None:
        """:meth:`store` on the cache's thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread(), self.store, key, backend_id, done)

    def _thread(self) -> ThreadPoolExecutor:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentgraph-cache")
        return self._worker

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM calls").fetchone()
        return int(n)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "hits": self.hits, "misses": self.misses}

    def close(self) -> None:
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"CallCache({self.path!r}, mode={self.mode!r})"
