"""The append-only store of a search: every sample asked, every evaluation, and the
searcher's state after each iteration, in one SQLite file.

A search resumes from it exactly: the state after the last finished iteration (parameters,
optimizer moments, multipliers, RNG state) is restored, the samples already asked in the
iteration that was running are asked again from the store instead of drawn anew, and the
evaluations already recorded for them are reused. Each record is its own committed
transaction, so ``kill -9`` at any moment loses at most the evaluation in flight.

Rows are only inserted, never updated: the file is also the search's history (the search
curve, the Pareto front) and can be read while a search runs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgraph import AgentGraphError

__all__ = ["Asked", "Record", "SearchStore", "StoreError"]


class StoreError(AgentGraphError, ValueError):
    """A search store cannot be used: not a store, or one made for another search.
    ``path`` names the file."""

    def __init__(self, message: str, *, path: Path) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS asked (
    iteration INTEGER NOT NULL, slot INTEGER NOT NULL, decisions TEXT NOT NULL,
    spec TEXT NOT NULL, log_prob REAL NOT NULL, PRIMARY KEY (iteration, slot));
CREATE TABLE IF NOT EXISTS evaluations (
    iteration INTEGER NOT NULL, slot INTEGER NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (iteration, slot));
CREATE TABLE IF NOT EXISTS states (iteration INTEGER PRIMARY KEY, state TEXT NOT NULL);
"""
_VERSION = "agentgraph-search-store/1"


@dataclass(frozen=True, slots=True)
class Asked:
    """One sample asked in an iteration: its decisions (JSON-able), the graph as YAML,
    and its log-probability under the parameters it was drawn from."""

    iteration: int
    slot: int
    decisions: Any
    spec: str
    log_prob: float


@dataclass(frozen=True, slots=True)
class Record:
    iteration: int
    slot: int
    result: Mapping[str, Any]


class SearchStore:
    """``SearchStore(path, config=...)``: open or create a store. ``config`` (JSON-able:
    the space, the task slices, the budget, the searcher and its settings, the seed)
    identifies the search; a store made for another search is refused, so a resumed
    search never mixes two."""

    def __init__(self, path: str | Path, *, config: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.config_hash = hashlib.blake2b(
            json.dumps(config, sort_keys=True, default=str).encode(), digest_size=16
        ).hexdigest()
        if self.path.is_dir():
            raise StoreError("is a directory, not a search store", path=self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Used from one thread at a time (the tuner awaits each write in a worker thread).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a committed row survives a crash
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"not a search store ({exc})", path=self.path) from None
        if not meta:
            self._insert("meta", ("version", _VERSION), ("config", self.config_hash))
            self._insert("meta", ("config_json", json.dumps(config, default=str)))
        elif meta.get("version") != _VERSION or meta.get("config") != self.config_hash:
            raise StoreError(
                "this store holds another search (other space, tasks, budget, searcher or "
                "seed); give another --store file, or delete this one to start over",
                path=self.path,
            )

    def _insert(self, table: str, *rows: tuple[Any, ...]) -> None:
        width = len(rows[0])
        marks = ", ".join("?" * width)
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)

    def record_asked(self, asked: list[Asked]) -> None:
        self._insert(
            "asked",
            *[(a.iteration, a.slot, json.dumps(a.decisions), a.spec, a.log_prob) for a in asked],
        )

    def asked(self, iteration: int) -> list[Asked]:
        rows = self._db.execute(
            "SELECT iteration, slot, decisions, spec, log_prob FROM asked "
            "WHERE iteration = ? ORDER BY slot",
            (iteration,),
        ).fetchall()
        return [Asked(i, s, json.loads(d), spec, lp) for i, s, d, spec, lp in rows]

    def record_evaluation(self, iteration: int, slot: int, result: Mapping[str, Any]) -> None:
        self._insert("evaluations", (iteration, slot, json.dumps(result)))

    def evaluations(self, iteration: int | None = None) -> list[Record]:
        query = "SELECT iteration, slot, result FROM evaluations"
        args: tuple[Any, ...] = ()
        if iteration is not None:
            query += " WHERE iteration = ?"
            args = (iteration,)
        rows = self._db.execute(query + " ORDER BY iteration, slot", args).fetchall()
        return [Record(i, s, json.loads(r)) for i, s, r in rows]

    def record_state(self, iteration: int, state: Mapping[str, Any]) -> None:
        """The searcher's state once ``iteration`` is told: the point to resume from."""
        self._insert("states", (iteration, json.dumps(state)))

    def last_state(self) -> tuple[int, dict[str, Any]] | None:
        row = self._db.execute(
            "SELECT iteration, state FROM states ORDER BY iteration DESC LIMIT 1"
        ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def history(self) -> Iterator[tuple[Asked, Mapping[str, Any]]]:
        """Every evaluated sample with its result, in order."""
        rows = self._db.execute(
            "SELECT a.iteration, a.slot, a.decisions, a.spec, a.log_prob, e.result "
            "FROM asked a JOIN evaluations e USING (iteration, slot) "
            "ORDER BY a.iteration, a.slot"
        )
        for i, s, d, spec, lp, result in rows:
            yield Asked(i, s, json.loads(d), spec, lp), json.loads(result)

    def close(self) -> None:
        self._db.close()
