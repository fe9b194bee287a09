"""Local GGUF models, in process, through llama-cpp-python.

One llama.cpp instance is loaded per (model file, load options) and shared by every
backend and node that uses it. A llama.cpp context is not thread-safe, so an instance has
exactly one slot and one worker thread; inference never runs on the event loop.
Cancelling a call (a timeout, a cancelled run) makes the next sampled token EOS, so the
worker is free again after at most one token.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydantic

from agentgraph import (
    ChatMessage,
    Completion,
    CompletionRequest,
    EmptyCompletion,
    GraphValidationError,
    MissingDependency,
    ModelSpec,
    Price,
    Usage,
    file_fingerprint,
    resolve_model_path,
)


class LlamaOptions(pydantic.BaseModel):
    """``options:`` of a ``backend: llama_cpp`` model."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    n_ctx: int = pydantic.Field(default=2048, ge=64)
    n_gpu_layers: int = pydantic.Field(default=-1, ge=-1)
    """Layers to offload to the GPU; -1 offloads all when the build has GPU support."""
    n_threads: int | None = pydantic.Field(default=None, ge=1)
    """CPU threads; default: every core (llama-cpp-python's own default is half)."""
    n_batch: int = pydantic.Field(default=512, ge=1)
    chat_format: str | None = None
    """A llama-cpp-python chat format name overriding the template in the GGUF file."""
    completion_prompt: bool | None = None
    """Render messages as a plain prompt; default: only when the file has no chat template."""
    verbose: bool = False


_LoadKey = tuple[str, int, int, int, int, str | None, bool]


class _Instance:
    """One loaded model with its single worker thread."""

    def __init__(self, path: Path, opts: LlamaOptions) -> None:
        self.path = path
        self.opts = opts
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self.llama: Any = None
        self.chat = True
        self.gpu_offload = False

    async def ensure_loaded(self) -> None:
        if self.llama is None:  # loads run on the single worker, so they never overlap
            await asyncio.get_running_loop().run_in_executor(self.worker, self._load)

    def _load(self) -> None:
        if self.llama is not None:
            return
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependency(
                "the llama_cpp backend needs llama-cpp-python: pip install 'agentgraph[llama]'"
            ) from None
        o = self.opts
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        llama = llama_cpp.Llama(
            model_path=str(self.path),
            n_ctx=o.n_ctx,
            n_gpu_layers=o.n_gpu_layers if self.gpu_offload else 0,
            n_threads=o.n_threads or os.cpu_count() or 1,
            n_batch=o.n_batch,
            chat_format=o.chat_format,
            verbose=o.verbose,
        )
        has_template = bool(llama.metadata.get("tokenizer.chat_template"))
        self.chat = (
            not o.completion_prompt
            if o.completion_prompt is not None
            else (has_template or o.chat_format is not None)
        )
        self.llama = llama

    def generate(self, request: CompletionRequest, cancel: threading.Event) -> dict[str, Any]:
        llama = self.llama
        s = request.sampling
        eos = llama.token_eos()

        def stop_on_cancel(_ids: Any, scores: Any) -> Any:
            if cancel.is_set():
                scores[:] = -float("inf")
                scores[eos] = 0.0
            return scores

        kwargs: dict[str, Any] = {
            "max_tokens": s.max_tokens or 256,
            "logits_processor": [stop_on_cancel],
        }
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(s, name)
            if value is not None:
                kwargs[name] = value
        if s.seed is not None:
            kwargs["seed"] = s.seed + request.sample_index
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if self.chat:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            out: dict[str, Any] = llama.create_chat_completion(messages=messages, **kwargs)
            choice = out["choices"][0]
            text = choice["message"]["content"] or ""
        else:
            out = llama.create_completion(prompt=plain_prompt(request.messages), **kwargs)
            choice = out["choices"][0]
            text = choice["text"]
        return {"text": text, "usage": out["usage"], "finish_reason": choice.get("finish_reason")}


def plain_prompt(messages: tuple[ChatMessage, ...]) -> str:
    """A prompt for base models without a chat template: the turns as plain paragraphs."""
    parts = []
    for m in messages:
        parts.append(f"Answer: {m.content}" if m.role == "assistant" else m.content)
    return "\n\n".join(parts) + "\n\n"


_instances: weakref.WeakValueDictionary[_LoadKey, _Instance] = weakref.WeakValueDictionary()
_instances_lock = threading.Lock()


def _instance(path: Path, opts: LlamaOptions) -> _Instance:
    key: _LoadKey = (
        str(path.resolve()),
        opts.n_ctx,
        opts.n_gpu_layers,
        opts.n_threads or 0,
        opts.n_batch,
        opts.chat_format,
        bool(opts.completion_prompt),
    )
    with _instances_lock:
        inst = _instances.get(key)
        if inst is None:
            inst = _instances[key] = _Instance(path, opts)
        return inst


class LlamaCppBackend:
    """A GGUF model run in process. ``path`` may be ``pkg:<distribution>/<file>``."""

    def __init__(
        self,
        path: str | Path,
        *,
        options: LlamaOptions | None = None,
        price: Price | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self._path = resolve_model_path(str(path), base_dir)
        self._opts = options or LlamaOptions()
        self._instance = _instance(self._path, self._opts)
        self._price = price or Price()
        fmt = self._opts.chat_format or "gguf"
        self._id = f"llama_cpp:{self._path.name}:{file_fingerprint(self._path)}:{fmt}"

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> LlamaCppBackend:
        if spec.path is None:
            raise GraphValidationError(
                "a llama_cpp model needs 'path': a GGUF file or 'pkg:<distribution>/<file>'",
                path=("models", name),
            )
        if spec.slots not in (None, 1):
            raise GraphValidationError(
                "a llama.cpp instance serves one call at a time; 'slots' must be 1 or unset",
                path=("models", name, "slots"),
            )
        try:
            opts = LlamaOptions.model_validate(spec.options)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            valid = ", ".join(LlamaOptions.model_fields)
            msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            raise GraphValidationError(
                f"{msg}; valid options: {valid}", path=("models", name, "options", *loc)
            ) from None
        try:
            return cls(spec.path, options=opts, price=spec.price, base_dir=base_dir)
        except FileNotFoundError as exc:
            raise GraphValidationError(str(exc), path=("models", name, "path")) from None

    @property
    def id(self) -> str:
        return self._id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def slots(self) -> int:
        return 1

    @property
    def resource(self) -> Hashable:
        return self._instance

    @property
    def price(self) -> Price:
        return self._price

    @property
    def gpu_offload(self) -> bool:
        """Whether this llama-cpp-python build offloads layers to a GPU (after loading)."""
        return self._instance.gpu_offload

    async def aopen(self) -> None:
        await self._instance.ensure_loaded()

    async def complete(self, request: CompletionRequest) -> Completion:
        inst = self._instance
        await inst.ensure_loaded()
        cancel = threading.Event()
        start = time.perf_counter()
        fut = asyncio.get_running_loop().run_in_executor(
            inst.worker, inst.generate, request, cancel
        )
        try:
            out = await fut
        except asyncio.CancelledError:
            cancel.set()
            raise
        latency = time.perf_counter() - start
        text: str = out["text"]
        if not text.strip():
            raise EmptyCompletion(
                f"{self._id} returned no text (finish_reason={out['finish_reason']!r})",
                backend=self._id,
            )
        usage = Usage(out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"])
        return Completion(text, usage, latency_s=latency, finish_reason=out["finish_reason"])

    async def aclose(self) -> None:
        # The instance stays loaded while any backend refers to it; weak references free it.
        return None
