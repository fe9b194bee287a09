"""Damaged call cache files: a damaged entry is a miss, never a wrong hit; a damaged,
truncated or foreign file is a CacheFileError naming it, or is set aside with rebuild."""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import agentgraph as ag
from agentgraph._cache import CallCache
from agentgraph._cli import main
from agentgraph._errors import CacheFileError

N = 40


def answer(i: int) -> str:
    return f"Answer: {1000 + i} (entry marker-{i:03d})"


def fill(path: Path, n: int = N) -> None:
    cache = CallCache(path)
    for i in range(n):
        cache.store(f"key{i}", "scripted:m", ag.Completion(answer(i), ag.Usage(3, 4), 0.25))
    cache.close()  # the last connection folds the WAL back into the file


def assert_never_wrong(cache: CallCache, n: int = N) -> int:
    """Every lookup is a miss or the very answer stored; returns the hits."""
    hits = 0
    for i in range(n):
        done = cache.lookup(f"key{i}")
        if done is not None:
            assert done.text == answer(i) and done.cached
            assert done.usage == ag.Usage(3, 4) and done.latency_s == 0.25
            hits += 1
    return hits


def test_an_intact_cache_answers_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    fill(path)
    cache = CallCache(path, mode="replay")
    assert assert_never_wrong(cache) == N and cache.damaged == 0


@pytest.mark.parametrize(
    "old, new",
    [
        (b"1007", b"1008"),  # another valid answer: the case a cache must never serve
        (b"marker-007", b"\xff\xferker-007"),  # bytes that are not UTF-8
    ],
)
def test_flipped_bytes_in_an_answer_are_a_logged_miss_then_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, old: bytes, new: bytes
) -> None:
    path = tmp_path / "calls.sqlite"
    fill(path)
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    cache = CallCache(path)
    with caplog.at_level(logging.WARNING, logger="agentgraph.cache"):
        assert cache.lookup("key7") is None
    assert cache.damaged == 1 and cache.misses == 1
    assert any(str(path) in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records)
    assert assert_never_wrong(cache) == N - 1
    # Recomputed and overwritten: the entry is whole again.
    cache.store("key7", "scripted:m", ag.Completion(answer(7), ag.Usage(3, 4), 0.25))
    assert assert_never_wrong(cache) == N


def test_every_field_of_an_entry_is_covered_by_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    fill(path, 3)
    edits = [
        "UPDATE calls SET prompt_tokens = 30 WHERE key = 'key0'",
        "UPDATE calls SET completion_tokens = 40 WHERE key = 'key1'",
        "UPDATE calls SET latency_s = 2.5 WHERE key = 'key2'",
    ]
    db = sqlite3.connect(path)
    for sql in edits:
        db.execute(sql)
    # An entry moved under another key is damaged too: the key is in its checksum.
    db.execute("UPDATE calls SET key = 'moved' WHERE key = 'key0'")
    db.commit()
    db.close()
    cache = CallCache(path)
    assert [cache.lookup(k) for k in ("key0", "key1", "key2", "moved")] == [None] * 4
    assert cache.damaged == 3 and cache.misses == 4


def test_random_byte_flips_never_give_a_wrong_hit(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine.sqlite"
    fill(pristine)
    data = pristine.read_bytes()
    rng = random.Random(7)
    outcomes = {"refused": 0, "opened": 0}
    for trial in range(300):
        path = tmp_path / f"flip{trial}.sqlite"
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            cache = CallCache(path)
        except CacheFileError as exc:
            assert str(path) in str(exc) and exc.path == str(path)
            outcomes["refused"] += 1
            continue
        try:
            assert_never_wrong(cache)
        except CacheFileError as exc:  # damage found only by a lookup: still named
            assert str(path) in str(exc)
        finally:
            cache.close()
        outcomes["opened"] += 1
    assert outcomes["opened"] > 0


def damage_truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damage_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def damage_foreign(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT, email TEXT)")
    db.execute("INSERT INTO users VALUES ('ada', 'ada@example.org')")
    db.commit()
    db.close()


def damage_foreign_calls(path: Path) -> None:
    """A table named ``calls`` of another shape."""
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY, number TEXT)")
    db.commit()
    db.close()


DAMAGES = {
    "truncated": (damage_truncated, "damaged or truncated"),
    "garbage": (damage_garbage, "not an SQLite database"),
    "foreign": (damage_foreign, "not an agentgraph call cache"),
    "foreign-calls": (damage_foreign_calls, "not an agentgraph call cache"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_or_foreign_file_is_a_clear_error_and_is_left_alone(
    tmp_path: Path, kind: str
) -> None:
    damage, needle = DAMAGES[kind]
    path = tmp_path / "calls.sqlite"
    fill(path)
    damage(path)
    before = path.read_bytes()
    for mode in ("read_write", "read_only", "replay"):
        with pytest.raises(CacheFileError) as info:
            CallCache(path, mode=mode)  # type: ignore[arg-type]
        message = str(info.value)
        assert repr(str(path)) in message and needle in message and "rebuild" in message
        assert "\n" not in message and isinstance(info.value, ValueError)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calls.sqlite"]


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_rebuild_sets_a_damaged_file_aside_and_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    damage, _ = DAMAGES[kind]
    path = tmp_path / "calls.sqlite"
    fill(path)
    damage(path)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="agentgraph.cache"):
        cache = CallCache(path, rebuild=True)
    assert len(cache) == 0
    assert (tmp_path / "calls.sqlite.damaged-1").read_bytes() == before
    assert any(
        "damaged-1" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )
    cache.store("key0", "scripted:m", ag.Completion(answer(0), ag.Usage(3, 4), 0.25))
    cache.close()
    assert assert_never_wrong(CallCache(path, mode="replay"), 1) == 1
    # A second damaged file goes beside the first, never over it.
    damage(path)
    CallCache(path, rebuild=True).close()
    assert (tmp_path / "calls.sqlite.damaged-1").read_bytes() == before
    assert (tmp_path / "calls.sqlite.damaged-2").exists()


def test_rebuild_keeps_an_intact_cache(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    fill(path)
    cache = CallCache(path, rebuild=True)
    assert assert_never_wrong(cache) == N
    assert not list(tmp_path.glob("*.damaged-*"))


def test_a_cache_of_the_first_format_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE calls (key TEXT PRIMARY KEY, backend TEXT NOT NULL, text TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, "
        "latency_s REAL NOT NULL, finish_reason TEXT, "
        "created REAL NOT NULL DEFAULT (julianday('now')))"
    )
    db.execute(
        "INSERT INTO calls (key, backend, text, prompt_tokens, completion_tokens, latency_s, "
        "finish_reason) VALUES ('key0', 'scripted:m', ?, 3, 4, 0.25, 'stop')",
        (answer(0),),
    )
    db.commit()
    db.close()
    cache = CallCache(path, mode="replay")
    done = cache.lookup("key0")
    assert done is not None and done.text == answer(0) and done.finish_reason == "stop"
    cache.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT checksum IS NOT NULL FROM calls").fetchall() == [(1,)]
    db.close()


def test_a_cache_of_a_newer_format_is_refused_even_with_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    fill(path, 1)
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    for rebuild in (False, True):
        with pytest.raises(CacheFileError, match="format 99, written by a newer agentgraph"):
            CallCache(path, rebuild=rebuild)
    assert not list(tmp_path.glob("*.damaged-*"))


@pytest.mark.parametrize("mode", ["read_only", "replay"])
def test_reading_modes_need_an_existing_file_and_create_nothing(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "sub" / "calls.sqlite"
    with pytest.raises(CacheFileError, match="does not exist; mode"):
        CallCache(path, mode=mode)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_a_directory_is_not_a_cache(tmp_path: Path) -> None:
    with pytest.raises(CacheFileError, match="is a directory"):
        CallCache(tmp_path)


def test_an_empty_file_is_an_empty_cache(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    path.touch()
    assert len(CallCache(path)) == 0


GRAPH = """
models:
  m: {backend: scripted, options: {responses: "Answer: 4"}}
nodes:
  a: {role: proposer, model: m}
output: a
"""


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_recomputes_a_damaged_answer_and_refuses_a_damaged_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    cache = tmp_path / "calls.sqlite"
    run = ("run", str(graph), "What is 2 + 2?", "--json", "--cache", str(cache))
    code, out, _ = cli(capsys, *run)
    assert code == 0 and json.loads(out)["tokens"] > 0
    # The stored answer "Answer: 4" becomes "Answer: 5": served, it would be wrong.
    data = cache.read_bytes()
    assert data.count(b"Answer: 4") == 1
    cache.write_bytes(data.replace(b"Answer: 4", b"Answer: 5"))
    code, out, _ = cli(capsys, *run)
    first = json.loads(out)
    assert code == 0 and first["answer"] == "4" and first["tokens"] > 0  # recomputed
    code, out, _ = cli(capsys, *run)
    assert code == 0 and json.loads(out)["tokens"] == 0  # and stored whole again
    damage_garbage(cache)
    code, out, err = cli(capsys, *run)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("agentgraph: error: ")
    assert repr(str(cache)) in err and "--rebuild-cache" in err
    code, out, err = cli(capsys, *run, "--rebuild-cache")
    assert code == 0 and json.loads(out)["answer"] == "4"
    assert (tmp_path / "calls.sqlite.damaged-1").exists()


def test_cli_replay_of_a_damaged_cache_fails_in_a_subprocess_with_one_line(
    tmp_path: Path,
) -> None:
    graph = tmp_path / "g.yaml"
    graph.write_text(GRAPH)
    cache = tmp_path / "calls.sqlite"
    damage_garbage(cache)
    out = subprocess.run(
        [sys.executable, "-m", "agentgraph", "run", str(graph), "q", "--replay", str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "not an SQLite database" in out.stderr
    assert "Traceback" not in out.stderr
