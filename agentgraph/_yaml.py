"""YAML <-> GraphSpec, with errors that point at file, line, column and field.

A graph file holds plain data: strings, numbers, booleans, null, lists and mappings.
Other YAML types are not read (``2020-02-30`` is a string, not a date that can be
impossible; ``!!binary`` and ``!!python/...`` are refused), and a scalar its tag cannot
read (``!!int abc``) is a located error.

Loading costs time and memory linear in the text: events come from libyaml when it is
installed (PyYAML's own parser otherwise), and the node tree is composed here without
recursion, so nesting depth and alias expansion are measured before anything expands. A
document nested deeper than :data:`MAX_DEPTH` levels, or whose aliases expand to more
nodes than its size allows (an alias bomb), is refused at the event that passes the limit.
The tree is then walked once, shared (aliased) nodes once, to record where every field
sits, so both YAML syntax errors and schema errors report a location.
"""

from __future__ import annotations

import contextlib
import gc
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pydantic
import yaml
from yaml.composer import ComposerError
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from ._errors import GraphValidationError, format_path, validation_error
from ._spec import SCHEMA_VERSION, GraphSpec

__all__ = ["dumps_spec", "load_spec", "loads_spec", "parse", "relocate", "spec_from_data"]

_Path = tuple[str | int, ...]
Positions = dict[_Path, tuple[int, int]]

MAX_DEPTH = 100
"""Levels of nesting a document may have, aliases expanded (a graph needs about six)."""
MIN_EXPANDED = 100_000
EXPANDED_PER_CHAR = 4
"""A document may expand, through aliases, to ``max(MIN_EXPANDED, EXPANDED_PER_CHAR *
characters)`` nodes: far above a graph that reuses a few blocks (each node already takes
two characters or more), far below what makes validation slow."""

# YAML's printable set (what PyYAML's reader accepts): tab, newlines and printable
# characters; no C0/C1 controls, NUL, surrogates, U+FFFE or U+FFFF.
_NON_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_CORE = "tag:yaml.org,2002:"


def read_text(path: str | Path, what: str = "graph file") -> str:
    """The text of a YAML file (``what`` names it: a graph file, a space file); a file
    that is missing, unreadable or not UTF-8 text is a :class:`GraphValidationError` naming
    it (and the line of the first bad byte)."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise GraphValidationError(f"{what} not found", source=source) from None
    except IsADirectoryError:
        raise GraphValidationError(f"is a directory, not a {what}", source=source) from None
    except PermissionError:
        raise GraphValidationError(
            f"cannot read the {what}: permission denied", source=source
        ) from None
    except (OSError, ValueError) as exc:  # EIO, a name too long, a NUL byte in the path
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GraphValidationError(f"cannot read the {what}: {why}", source=source) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start : exc.start + 1]
        raise GraphValidationError(
            f"not UTF-8 text: byte {bad!r} at offset {exc.start} (a {what} is YAML text)",
            source=source,
            line=line,
            column=column,
        ) from None


def load_spec(path: str | Path) -> GraphSpec:
    """Read and validate a YAML graph file into a GraphSpec (no backends are built)."""
    return loads_spec(read_text(path), source=str(path))


def loads_spec(text: str, *, source: str = "<string>") -> GraphSpec:
    data, positions = parse(text, source)
    return spec_from_data(data, source=source, positions=positions)


def dumps_spec(spec: GraphSpec) -> str:
    """The spec as YAML text (fields left unset stay unset, so the round trip is exact)."""
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    data.pop("schema", None)
    return yaml.dump(
        {"schema": SCHEMA_VERSION, **data}, Dumper=_Dumper, sort_keys=False, allow_unicode=True
    )


def spec_from_data(
    data: Any, *, source: str | None = None, positions: Positions | None = None
) -> GraphSpec:
    """Validate plain data into a GraphSpec, turning every problem into GraphValidationError."""
    positions = positions or {}
    if not isinstance(data, Mapping):
        raise _located("a graph document must be a mapping", (), source, positions)
    try:
        with _collector_paused():
            return GraphSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        err = validation_error(exc, GraphSpec)
        raise _located(err.message, err.path, source, positions) from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading builds many objects and no reference cycles, so the cyclic garbage collector
    finds nothing; but its passes walk the whole growing document again and again, which
    made a 60,000-node load a third slower per node than a 1,000-node one. Paused for the
    load; resumed only by the call that paused it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def relocate(err: GraphValidationError, source: str, positions: Positions) -> GraphValidationError:
    """The same error, located in the YAML document it came from."""
    return _located(err.message, err.path, source, positions)


def _located(
    message: str, path: _Path, source: str | None, positions: Positions
) -> GraphValidationError:
    # A missing or invalid field may have no position of its own: use its nearest parent.
    probe = path
    while probe and probe not in positions:
        probe = probe[:-1]
    line, column = positions.get(probe, (None, None))
    return GraphValidationError(message, path=path, source=source, line=line, column=column)


class _Events(Protocol):
    def get_event(self) -> Any: ...
    def check_event(self, *choices: type[yaml.Event]) -> bool: ...


class _PyEvents(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's pure-Python parser, for when libyaml is not installed."""

    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


def _libyaml_events(text: str) -> _Events:
    from yaml._yaml import CParser

    return CParser(text)


events_from: Callable[[str], _Events] = (
    _libyaml_events if getattr(yaml, "__with_libyaml__", False) else _PyEvents
)
"""The event source: libyaml's parser (about ten times faster) when installed."""


_SCALAR_TAGS = frozenset(_CORE + t for t in ("null", "bool", "int", "float", "str"))


class _Resolver(Resolver):
    """YAML 1.1's implicit types, less two a graph has no use for: a string that looks like
    a date stays a string (an impossible date would fail to construct), and so does '='
    (the 'value' type)."""


_Resolver.yaml_implicit_resolvers = {
    first: [(t, r) for t, r in resolvers if t not in (_CORE + "timestamp", _CORE + "value")]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


def parse(text: str, source: str) -> tuple[Any, Positions]:
    """The document's data and the position of every field path in it."""
    bad = _NON_PRINTABLE.search(text)
    if bad is not None:
        ch = bad.group()
        line, column = _line_column(text, bad.start())
        raise GraphValidationError(
            f"invalid YAML: unacceptable character {ch!r} (#x{ord(ch):04x}); control "
            "characters and NUL bytes cannot appear in YAML, even quoted (write them as "
            "escapes in a double-quoted string)",
            source=source,
            line=line,
            column=column,
        )
    try:
        with _collector_paused():
            return _Document(source, len(text)).load(events_from(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        message = f"invalid YAML: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise GraphValidationError(
            message,
            source=source,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:  # a reader error the check above did not foresee
        position = getattr(exc, "position", None)
        located = _line_column(text, position) if isinstance(position, int) else None
        raise GraphValidationError(
            f"invalid YAML: {exc}".splitlines()[0],
            source=source,
            line=located[0] if located else None,
            column=located[1] if located else None,
        ) from None


def _line_column(text: str, index: int) -> tuple[int, int]:
    index = min(index, len(text))
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag


@dataclass(slots=True)
class _Open:
    """A collection being read: its data so far, and its size and height with aliases
    expanded."""

    data: dict[Any, Any] | list[Any]
    path: _Path
    anchor: str | None
    size: int = 1
    height: int = 1
    key: Any = None  # a mapping's key waiting for its value ...
    key_at: tuple[int, int] | None = None  # ... and where it is (None: no key waiting)


_OPEN: Any = object()  # an anchor whose collection is still being read


class _Document:
    """Reads one document from parser events into plain data and the position of every
    field path, in one pass without recursion (what PyYAML's composer and constructor do
    in two recursive ones). Aliases share the data of their anchor, as PyYAML's do; the
    nodes they would expand to are counted, never built."""

    def __init__(self, source: str, chars: int) -> None:
        self.source = source
        self.chars = chars
        self.limit = max(MIN_EXPANDED, EXPANDED_PER_CHAR * chars)
        self.constructor = SafeConstructor()
        self.resolver = _Resolver()

    def load(self, events: _Events) -> tuple[Any, Positions]:
        events.get_event()  # stream start
        if events.check_event(yaml.StreamEndEvent):
            raise GraphValidationError("the document is empty", source=self.source, line=1)
        document = events.get_event()
        anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (data, size, height)
        positions: Positions = {}
        stack: list[_Open] = []
        total = 0  # nodes so far, aliases expanded
        while True:
            event: Any = events.get_event()
            mark = event.start_mark
            start = (mark.line + 1, mark.column + 1)
            at: tuple[int, int] | None = start
            if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                done = stack.pop()
                value, size, height = done.data, done.size, done.height
                at = None  # recorded where it started
                if done.anchor is not None:
                    anchors[done.anchor] = (value, size, height)
                if not stack:
                    break
            elif isinstance(event, yaml.AliasEvent):
                anchored = anchors.get(str(event.anchor))
                if anchored is None:
                    raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", mark)
                if anchored is _OPEN:
                    raise ComposerError(
                        None,
                        None,
                        f"recursive alias *{event.anchor}: it refers to a node that contains it",
                        mark,
                    )
                value, size, height = anchored
                total += size
                if total > self.limit:
                    raise ComposerError(
                        None,
                        None,
                        f"aliases expand to more than {self.limit:,} nodes (the limit for a "
                        f"document of {self.chars:,} characters); an alias may repeat a block, "
                        "not multiply the document",
                        mark,
                    )
                if len(stack) + height > MAX_DEPTH:
                    raise ComposerError(
                        None,
                        None,
                        f"alias *{event.anchor} nests deeper than {MAX_DEPTH} levels",
                        mark,
                    )
            else:
                anchor = event.anchor
                if anchor is not None and anchor in anchors:
                    raise ComposerError(None, None, f"found duplicate anchor {anchor!r}", mark)
                total += 1
                if isinstance(event, yaml.ScalarEvent):
                    top = stack[-1] if stack else None
                    as_key = top is not None and isinstance(top.data, dict) and top.key_at is None
                    value, size, height = self._scalar(event, as_key), 1, 1
                    if anchor is not None:
                        anchors[anchor] = (value, 1, 1)
                else:
                    is_map = isinstance(event, yaml.MappingStartEvent)
                    self._check_collection_tag(event, is_map)
                    if len(stack) >= MAX_DEPTH:
                        raise ComposerError(
                            None, None, f"the document nests deeper than {MAX_DEPTH} levels", mark
                        )
                    if anchor is not None:
                        anchors[anchor] = _OPEN
                    path = self._enter(stack, positions, start)
                    stack.append(_Open({} if is_map else [], path, anchor))
                    continue
                if not stack:  # the whole document is one scalar
                    positions[()] = start
                    break
            self._add(stack[-1], value, size, height, at, positions)
        events.get_event()  # document end
        if not events.check_event(yaml.StreamEndEvent):
            raise ComposerError(
                "expected a single document in the stream",
                document.start_mark,
                "but found another document",
                events.get_event().start_mark,
            )
        return value, positions

    def _enter(self, stack: list[_Open], positions: Positions, at: tuple[int, int]) -> _Path:
        """The path of a collection that starts at ``at``, its position recorded."""
        if not stack:
            positions[()] = at
            return ()
        parent = stack[-1]
        if isinstance(parent.data, list):
            path = (*parent.path, len(parent.data))
            positions[path] = at
        elif parent.key_at is None:
            raise self._error("mapping keys must be strings, not a list or mapping", parent, at)
        else:
            path = (*parent.path, parent.key)
            positions[path] = parent.key_at  # a block: point at its key
        return path

    def _add(
        self,
        parent: _Open,
        value: Any,
        size: int,
        height: int,
        at: tuple[int, int] | None,
        positions: Positions,
    ) -> None:
        parent.size += size
        parent.height = max(parent.height, height + 1)
        data = parent.data
        if isinstance(data, list):
            if at is not None:
                positions[(*parent.path, len(data))] = at
            data.append(value)
        elif parent.key_at is None:  # a key (a list or mapping key was refused as it began)
            assert at is not None
            if not isinstance(value, (str, int)):
                shown = (
                    f"a {type(value).__name__}" if isinstance(value, (dict, list)) else repr(value)
                )
                raise self._error(f"mapping keys must be strings, got {shown}", parent, at)
            if value in data:
                where = format_path(parent.path) or "the document"
                raise GraphValidationError(
                    f"duplicate key {value!r} in {where}",
                    path=(*parent.path, value),
                    source=self.source,
                    line=at[0],
                    column=at[1],
                )
            parent.key, parent.key_at = value, at
        else:
            path = (*parent.path, parent.key)
            if at is None or isinstance(value, (dict, list)):
                positions[path] = parent.key_at  # a block: point at its key
            else:
                positions[path] = at
            data[parent.key] = value
            parent.key_at = None

    def _error(self, message: str, parent: _Open, at: tuple[int, int]) -> GraphValidationError:
        return GraphValidationError(
            message, path=parent.path, source=self.source, line=at[0], column=at[1]
        )

    def _scalar(self, event: Any, as_key: bool) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _CORE + "str":
            return event.value
        mark = event.start_mark
        if tag == _CORE + "merge":
            if not as_key:  # '<<' is a merge only as a key; elsewhere, text
                return event.value
            raise ComposerError(
                None,
                None,
                "merge keys ('<<') are not supported; name the fields, or reuse a whole block "
                "with an alias",
                mark,
            )
        if tag not in _SCALAR_TAGS:
            raise ComposerError(None, None, _unsupported(tag), mark)
        node = yaml.ScalarNode(tag, event.value, mark, event.end_mark)
        try:
            return SafeConstructor.yaml_constructors[tag](self.constructor, node)
        except (ArithmeticError, LookupError, ValueError, TypeError, AttributeError):
            # PyYAML's scalar constructors assume well-formed text: '!!int abc' is a
            # ValueError, '!!bool maybe' a KeyError, '!!float ""' an IndexError.
            raise ComposerError(
                None, None, f"{event.value!r} is not a valid {_short(tag)}", mark
            ) from None

    @staticmethod
    def _check_collection_tag(event: Any, is_map: bool) -> None:
        tag = event.tag
        if tag is None or tag == "!":
            return
        expected = _CORE + ("map" if is_map else "seq")
        if tag != expected:
            raise ComposerError(None, None, _unsupported(tag), event.start_mark)


def _unsupported(tag: str) -> str:
    return (
        f"unsupported tag {_short(tag)!r} here: a graph file holds strings, numbers, "
        "booleans, null, lists and mappings"
    )


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)
