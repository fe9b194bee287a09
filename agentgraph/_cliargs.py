"""Argument types and shared options of the command line: a bad value is refused while the
command line is read, before any model loads or file is written."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ._cache import CacheMode, CallCache
from ._spec import LatencyProfile

__all__ = [
    "cache_arguments",
    "count",
    "input_file",
    "open_cache",
    "output_dir",
    "output_file",
    "profile_target",
    "profiles_in",
    "profiles_out",
    "profiles_problem",
    "seconds",
]


def seconds(text: str) -> float:
    """A time limit: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a usable time limit; give a finite number of seconds > 0"
        )
    return value


def count(minimum: int) -> Callable[[str], int]:
    """A whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is too small; give a number >= {minimum}")
        return value

    return parse


def _unreadable(path: str) -> str | None:
    p = Path(path)
    if not p.exists():
        return "does not exist"
    if p.is_dir():
        return "is a directory, not a file"
    if not os.access(p, os.R_OK):
        return "cannot be read (permission denied)"
    return None


def _unwritable(path: str) -> str | None:
    p = Path(path)
    if p.is_dir():
        return "is a directory; give the path of a file in it"
    folder = p.parent
    if not folder.exists():
        return f"cannot be written: folder {str(folder)!r} does not exist"
    if not folder.is_dir():
        return f"cannot be written: {str(folder)!r} is not a folder"
    if not os.access(p if p.exists() else folder, os.W_OK):
        return "cannot be written (permission denied)"
    return None


def _path(what: str, problem: Callable[[str], str | None]) -> Callable[[str], str]:
    """An argument type refusing a path for which ``problem`` says what is wrong."""

    def parse(text: str) -> str:
        why = problem(text)
        if why is not None:
            raise argparse.ArgumentTypeError(f"{what} {text!r} {why}")
        return text

    return parse


def input_file(what: str) -> Callable[[str], str]:
    """An existing, readable file (``what`` names it in errors)."""
    return _path(what, _unreadable)


def output_file(what: str) -> Callable[[str], str]:
    """A file that can be written (or created) in an existing folder: checked before a run,
    so its result is never lost to a path that could not have held it."""
    return _path(what, _unwritable)


def output_dir(what: str) -> Callable[[str], str]:
    """A folder that exists, or can be made in an existing folder."""

    def parse(text: str) -> str:
        p = Path(text)
        if p.exists() and not p.is_dir():
            raise argparse.ArgumentTypeError(f"{what} {text!r} is a file, not a folder")
        if not p.exists() and not p.parent.is_dir():
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} cannot be made: folder {str(p.parent)!r} does not exist"
            )
        if not os.access(p if p.exists() else p.parent, os.W_OK):
            raise argparse.ArgumentTypeError(
                f"{what} {text!r} cannot be written (permission denied)"
            )
        return text

    return parse


def cache_arguments(parser: argparse.ArgumentParser, *, group: Any = None) -> None:
    """``--cache FILE`` and ``--rebuild-cache``, as every command that runs graphs takes them."""
    (group or parser).add_argument(
        "--cache",
        metavar="FILE",
        type=output_file("call cache"),
        help="SQLite call cache to read and fill",
    )
    parser.add_argument(
        "--rebuild-cache",
        action="store_true",
        help="if the cache file is damaged or not a cache, set it aside as "
        "FILE.damaged-N and start a fresh one (default: stop with an error)",
    )


def open_cache(
    path: str | None, *, mode: CacheMode = "read_write", rebuild: bool
) -> CallCache | None:
    return CallCache(path, mode=mode, rebuild=rebuild) if path else None


def profile_target(text: str) -> str:
    if text.startswith("pkg:"):
        return text
    what = "graph file" if text.endswith((".yaml", ".yml")) else "model file"
    return input_file(what)(text)


def profiles_problem(path: str, *, must_exist: bool, output: bool) -> str | None:
    """What is wrong with a latency profile store, or None."""
    if not Path(path).exists() and not must_exist:
        return _unwritable(path) if output else None
    problem = _unreadable(path) or (_unwritable(path) if output else None)
    if problem is not None:
        return problem
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return "is not a text file (UTF-8)"
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"is not valid YAML{where}: {exc.problem or exc.context}"
    except (yaml.YAMLError, ValueError, KeyError, RecursionError) as exc:
        # PyYAML raises more than YAMLError for bad values (dates, !!int, deep nesting).
        return f"is not valid YAML: {type(exc).__name__}: {exc}"
    if data is None:
        return None
    if not isinstance(data, dict):
        return f"holds a {type(data).__name__}, not a mapping of backend ids to profiles"
    for key, entry in data.items():
        if not entry:
            continue
        try:
            LatencyProfile.model_validate(entry)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(entry)"
            return f"holds a bad profile {key!r}: {field}: {err['msg']}"
    return None


def profiles_in(text: str) -> str:
    problem = profiles_problem(text, must_exist=True, output=False)
    if problem is not None:
        hint = " (write one with: agentgraph profile GRAPH --profiles FILE)"
        raise argparse.ArgumentTypeError(
            f"profile store {text!r} {problem}" + (hint if problem == "does not exist" else "")
        )
    return text


def profiles_out(text: str) -> str:
    problem = profiles_problem(text, must_exist=False, output=True)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"profile store {text!r} {problem}")
    return text
