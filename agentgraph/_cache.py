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

Damage never becomes an answer. Every entry carries a checksum (BLAKE2b over the key and
everything stored with it): an entry that fails it is a miss (logged, recomputed and
overwritten), never a wrong answer marked as a hit. A file that is not an SQLite database,
is truncated or damaged in its structure (checked when it is opened), or is an SQLite
database of something else, raises :class:`CacheFileError` naming it; with
``rebuild=True`` it is set aside as ``<name>.damaged-<n>`` and a fresh cache takes its
place. A cache of the first format (no checksums) is upgraded in place when opened: its
entries are checksummed as they stand, since nothing recorded could tell a damaged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from ._errors import CacheFileError
from ._model import Completion, CompletionRequest, Usage

__all__ = ["CacheMode", "CallCache"]

log = logging.getLogger("agentgraph.cache")

CacheMode = Literal["read_write", "read_only", "replay"]
"""``read_write``: look up, store misses. ``read_only``: look up, store nothing.
``replay``: look up; a miss is an error (:class:`ReplayMiss`), nothing reaches a model.
The last two need an existing cache file."""

_MODES = ("read_write", "read_only", "replay")
# Marks the file as ours in the SQLite header, so a foreign database is told apart from a
# cache, and the format number says which columns to expect.
_APPLICATION_ID = 0x41474331  # "AGC1"
_FORMAT = 2
_V1_COLUMNS = (
    "key",
    "backend",
    "text",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "finish_reason",
    "created",
)
_COLUMNS = (*_V1_COLUMNS, "checksum")

_SCHEMA = """
CREATE TABLE calls (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    finish_reason TEXT,
    created REAL NOT NULL DEFAULT (julianday('now')),
    checksum TEXT
)
"""
# Text columns are read as bytes: a flipped byte may leave text that is not UTF-8, which
# must come out as a failed checksum, not as a decoding error of the whole lookup.
_ROW = (
    "CAST(backend AS BLOB), CAST(text AS BLOB), prompt_tokens, completion_tokens, "
    "latency_s, CAST(finish_reason AS BLOB), CAST(checksum AS BLOB)"
)


class _Unusable(Exception):
    """The file is damaged or not a cache: what ``rebuild=True`` sets aside."""


class CallCache:
    """``CallCache("calls.sqlite")``; ``CallCache(":memory:")`` for one process only.

    ``rebuild=True``: a damaged or foreign file is renamed to ``<name>.damaged-<n>`` (with
    its ``-wal`` and ``-shm`` files) and a fresh cache is made in its place; without it,
    such a file raises :class:`CacheFileError`."""

    def __init__(
        self, path: str | Path, *, mode: CacheMode = "read_write", rebuild: bool = False
    ) -> None:
        if mode not in _MODES:
            raise ValueError(
                f"unknown cache mode {mode!r}; valid modes: 'read_write', 'read_only', 'replay'"
            )
        self.path = str(path)
        self.mode: CacheMode = mode
        self._lock = threading.Lock()  # one connection, used from the loop and from threads
        self._check_path()
        try:
            self._db = self._open()
        except _Unusable as exc:
            if not rebuild:
                raise CacheFileError(
                    f"{exc}; move it away, or start a fresh cache with rebuild=True "
                    "(CLI: --rebuild-cache), which keeps it as "
                    f"{Path(self.path).name}.damaged-<n>",
                    path=self.path,
                ) from None
            aside = self._set_aside()
            log.warning(
                "call cache %s: %s; set aside as %s, starting afresh", self.path, exc, aside
            )
            try:
                self._db = self._open()
            except _Unusable as again:  # pragma: no cover - a fresh file is always usable
                raise CacheFileError(str(again), path=self.path) from None
        self.hits = 0
        self.misses = 0
        self.damaged = 0
        """Entries that failed their checksum (each also counted as a miss)."""
        self._worker: ThreadPoolExecutor | None = None
        self.flights: dict[str, asyncio.Future[Completion | None]] = {}
        """Calls in flight by key: their results, or None if they failed."""

    def _check_path(self) -> None:
        if self.path == ":memory:":
            return
        p = Path(self.path)
        if p.is_dir():
            raise CacheFileError(
                f"call cache {self.path!r} is a directory; give the path of a cache file",
                path=self.path,
            )
        if not p.exists():
            if self.mode != "read_write":
                raise CacheFileError(
                    f"call cache {self.path!r} does not exist; mode {self.mode!r} reads a "
                    "cache an earlier run wrote (mode 'read_write' creates one)",
                    path=self.path,
                )
            p.parent.mkdir(parents=True, exist_ok=True)

    def _open(self) -> sqlite3.Connection:
        """A connection to a checked (or new, or upgraded) cache file."""
        if self.path == ":memory:":
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            db.execute(_SCHEMA)
            return db
        # Only read_write may create the file (``rwc``); the others found it above.
        create = "rwc" if self.mode == "read_write" else "rw"
        uri = f"file:{quote(os.path.abspath(self.path))}?mode={create}"
        try:
            db = sqlite3.connect(
                uri, uri=True, timeout=30, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise CacheFileError(
                f"cannot open call cache {self.path!r}: {exc}", path=self.path
            ) from None
        try:
            self._check_structure(db)
            self._check_schema(db)
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_damage(exc):
                raise _Unusable(f"call cache {self.path!r} is {_damage(exc)}") from None
            raise CacheFileError(f"call cache {self.path!r}: {exc}", path=self.path) from None
        except BaseException:
            db.close()
            raise
        return db

    def _check_structure(self, db: sqlite3.Connection) -> None:
        # quick_check reads every page once: a truncated or scrambled file is found now,
        # not as a failing node in the middle of a run.
        rows = db.execute("PRAGMA quick_check(1)").fetchall()
        if rows != [("ok",)]:
            detail = " ".join(str(rows[0][0]).split()) if rows else "no result"
            raise _Unusable(f"call cache {self.path!r} is damaged (SQLite quick_check: {detail})")

    def _check_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # another process may be creating or upgrading it
        try:
            self._adopt(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _adopt(self, db: sqlite3.Connection) -> None:
        (app,) = db.execute("PRAGMA application_id").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = sorted(
            str(name)
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        )
        columns = tuple(str(r[1]) for r in db.execute("PRAGMA table_info(calls)"))
        if app == _APPLICATION_ID:
            if version > _FORMAT:
                raise CacheFileError(
                    f"call cache {self.path!r} has format {version}, written by a newer "
                    f"agentgraph; this one reads format {_FORMAT}",
                    path=self.path,
                )
            if version == _FORMAT and tables == ["calls"] and columns == _COLUMNS:
                return
            raise _Unusable(
                f"call cache {self.path!r} is damaged (format {version}, tables "
                f"{_names(tables)}, columns {_names(columns)}; expected format {_FORMAT})"
            )
        if app == 0 and not tables:  # a new (or empty) file
            db.execute(_SCHEMA)
        elif app == 0 and tables == ["calls"] and columns == _V1_COLUMNS:
            self._upgrade(db)
        else:
            raise _Unusable(
                f"call cache {self.path!r} is an SQLite database but not an agentgraph call "
                f"cache (application id {app}, tables {_names(tables)}; a cache holds one "
                "table 'calls')"
            )
        db.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {_FORMAT}")

    def _upgrade(self, db: sqlite3.Connection) -> None:
        db.execute("ALTER TABLE calls ADD COLUMN checksum TEXT")
        rows = db.execute(f"SELECT key, {_ROW} FROM calls").fetchall()
        db.executemany(
            "UPDATE calls SET checksum = ? WHERE key = ?",
            [(_checksum(str(key), *row[:6]), key) for key, *row in rows],
        )
        log.info("call cache %s: upgraded %d entries to format %d", self.path, len(rows), _FORMAT)

    def _set_aside(self) -> str:
        n = 1
        while any(Path(f"{self.path}.damaged-{n}{s}").exists() for s in ("", "-wal", "-shm")):
            n += 1
        aside = f"{self.path}.damaged-{n}"
        for suffix in ("", "-wal", "-shm"):  # a stale WAL would be replayed into a new file
            if Path(self.path + suffix).exists():
                os.replace(self.path + suffix, aside + suffix)
        return aside

    @staticmethod
    def key(backend_id: str, request: CompletionRequest) -> str:
        return hashlib.sha256(f"{backend_id}\n{request.key()}".encode()).hexdigest()

    def get(self, backend_id: str, request: CompletionRequest) -> Completion | None:
        return self.lookup(self.key(backend_id, request))

    def lookup(self, key: str) -> Completion | None:
        with self._lock, self._errors():
            row = self._db.execute(f"SELECT {_ROW} FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        done = _verified(key, row)
        if done is None:
            self.misses += 1
            self.damaged += 1
            log.warning(
                "call cache %s: the entry %s… fails its checksum (damaged); treated as a miss",
                self.path,
                key[:16],
            )
            return None
        self.hits += 1
        return done

    def put(self, backend_id: str, request: CompletionRequest, done: Completion) -> None:
        self.store(self.key(backend_id, request), backend_id, done)

    def store(self, key: str, backend_id: str, done: Completion) -> None:
        if self.mode != "read_write" or done.cached:
            return
        usage = done.usage or Usage()
        fields = (
            backend_id,
            done.text,
            usage.prompt_tokens,
            usage.completion_tokens,
            float(done.latency_s),
            done.finish_reason,
        )
        with self._lock, self._errors():
            # One statement: atomic on its own (the connection is in autocommit mode).
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, backend, text, prompt_tokens, "
                "completion_tokens, latency_s, finish_reason, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, *fields, _checksum(key, *fields)),
            )

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

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3 errors during use as :class:`CacheFileError` naming the file (sqlite3's
        own messages never do)."""
        try:
            yield
        except sqlite3.Error as exc:
            what = _damage(exc) if _is_damage(exc) else f"unusable ({exc})"
            raise CacheFileError(
                f"call cache {self.path!r} is {what}; start a fresh one with rebuild=True "
                "(CLI: --rebuild-cache)",
                path=self.path,
            ) from None

    def __len__(self) -> int:
        with self._lock, self._errors():
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


def _is_damage(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def _damage(exc: sqlite3.Error) -> str:
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        return "not an SQLite database (nor an agentgraph call cache)"
    return f"damaged or truncated ({exc})"


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "(none)"


def _parts(*values: Any) -> Iterator[bytes]:
    for v in values:
        if v is None:
            yield b"\x00"
        else:
            data = v.encode() if isinstance(v, str) else v if isinstance(v, bytes) else None
            if data is None:
                data = float(v).hex().encode() if isinstance(v, float) else str(v).encode()
            yield b"\x01" + len(data).to_bytes(8, "big") + data


def _checksum(
    key: str,
    backend: str | bytes,
    text: str | bytes,
    prompt_tokens: int,
    completion_tokens: int,
    latency_s: float,
    finish_reason: str | bytes | None,
) -> str:
    """BLAKE2b over the key and every stored field, each length-prefixed so no two entries
    serialize alike; the key is part of it, so an entry found under another key fails."""
    h = hashlib.blake2b(digest_size=16)
    fields = (key, backend, text, prompt_tokens, completion_tokens, latency_s, finish_reason)
    for part in _parts(*fields):
        h.update(part)
    return h.hexdigest()


def _verified(key: str, row: tuple[Any, ...]) -> Completion | None:
    """The stored completion, or None when the entry is damaged."""
    backend, text, prompt_tokens, completion_tokens, latency, finish, checksum = row
    if not (
        isinstance(backend, bytes)
        and isinstance(text, bytes)
        and isinstance(checksum, bytes)
        and type(prompt_tokens) is int
        and type(completion_tokens) is int
        and isinstance(latency, (int, float))
        and (finish is None or isinstance(finish, bytes))
    ):
        return None
    fields = (backend, text, prompt_tokens, completion_tokens, float(latency), finish)
    if checksum != _checksum(key, *fields).encode():
        return None
    try:
        answer = text.decode()
        reason = finish.decode() if finish is not None else None
    except UnicodeDecodeError:  # only a colliding checksum gets here
        return None
    # The recorded usage and latency are the call's true figures; a hit is charged nothing.
    return Completion(answer, Usage(prompt_tokens, completion_tokens), float(latency), True, reason)
