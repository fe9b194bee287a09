"""A content-addressed cache of model calls, in SQLite.

The key covers the backend's identity (kind + model file fingerprint or served name), every
sampling parameter, the messages and the sample index, so a hit is only ever returned for
the very same call. Runs and searches share one file; WAL mode lets several processes use
it at once. A hit is free: the ledger charges it 0 tokens and 0 money, and the trace marks
it ``cached``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
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

    @staticmethod
    def key(backend_id: str, request: CompletionRequest) -> str:
        return hashlib.sha256(f"{backend_id}\n{request.key()}".encode()).hexdigest()

    def get(self, backend_id: str, request: CompletionRequest) -> Completion | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens, latency_s, finish_reason "
                "FROM calls WHERE key = ?",
                (self.key(backend_id, request),),
            ).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        text, prompt_tokens, completion_tokens, latency, finish = row
        # The recorded usage is kept for reference; the ledger charges a hit nothing.
        return Completion(text, Usage(prompt_tokens, completion_tokens), latency, True, finish)

    def put(self, backend_id: str, request: CompletionRequest, done: Completion) -> None:
        if self.mode != "read_write" or done.cached:
            return
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, backend, text, prompt_tokens, "
                "completion_tokens, latency_s, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    self.key(backend_id, request),
                    backend_id,
                    done.text,
                    done.usage.prompt_tokens,
                    done.usage.completion_tokens,
                    done.latency_s,
                    done.finish_reason,
                ),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM calls").fetchone()
        return int(n)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self), "hits": self.hits, "misses": self.misses}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"CallCache({self.path!r}, mode={self.mode!r})"
