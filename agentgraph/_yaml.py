"""YAML <-> GraphSpec, with errors that point at file, line, column and field.

Only ``yaml.SafeLoader`` is used. The composed node tree is walked once to record where
every field sits, so both YAML syntax errors and schema errors report a location.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml

from ._errors import GraphValidationError, format_path, validation_error
from ._spec import SCHEMA_VERSION, GraphSpec

__all__ = ["dumps_spec", "load_spec", "loads_spec", "parse", "relocate", "spec_from_data"]

_Path = tuple[str | int, ...]
Positions = dict[_Path, tuple[int, int]]


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphValidationError("graph file not found", source=str(path)) from None


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
        return GraphSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        err = validation_error(exc, GraphSpec)
        raise _located(err.message, err.path, source, positions) from None


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


class _Loader(yaml.SafeLoader):
    pass


def parse(text: str, source: str) -> tuple[Any, Positions]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise GraphValidationError("the document is empty", source=source, line=1)
        positions: Positions = {}
        _walk(loader, node, (), positions, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        message = f"invalid YAML: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise GraphValidationError(
            message,
            source=source,
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    finally:
        loader.dispose()
    return data, positions


def _walk(loader: _Loader, node: yaml.Node, path: _Path, positions: Positions, source: str) -> None:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int)):
                raise GraphValidationError(
                    f"mapping keys must be strings, got {key!r}",
                    path=path,
                    source=source,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            if key in seen:
                raise GraphValidationError(
                    f"duplicate key {key!r} in {format_path(path) or 'the document'}",
                    path=(*path, key),
                    source=source,
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                )
            seen.add(key)
            _walk(loader, value_node, (*path, key), positions, source)
            if not isinstance(value_node, yaml.ScalarNode):  # a block: point at its key
                mark = key_node.start_mark
                positions[(*path, key)] = (mark.line + 1, mark.column + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(loader, item, (*path, i), positions, source)


class _Dumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)
