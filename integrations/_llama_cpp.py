"""Local GGUF models, in process, through llama-cpp-python.

One llama.cpp instance is loaded per (model file, load options) and shared by every
backend and node that uses it. All local llama.cpp work of the process (every load and
every generation, of every instance) runs on one shared worker thread, never on the event
loop: llama.cpp computes with an OpenMP team, and a second thread's team fights the first
for the cores (two instances called alternately from two threads decode at about a third
of the speed of one). So calls take turns, and every backend here shares one resource with
one slot. Cancelling a call (a timeout, a cancelled run) makes the next sampled token EOS,
so the thread is free again after at most one token.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from agentgraph import (
    BackendBase,
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
    sample_seed,
)
from agentgraph._errors import validation_error

T = TypeVar("T")


class LlamaOptions(pydantic.BaseModel):
    """``options:`` of a ``backend: llama_cpp`` model."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    n_ctx: int = pydantic.Field(default=2048, ge=64)
    """Context length; prompt plus answer must fit (longer answers are cut short)."""
    n_gpu_layers: int = pydantic.Field(default=-1, ge=-1)
    """Layers to offload to the GPU; -1 offloads all when the build has GPU support."""
    n_threads: int | None = pydantic.Field(default=None, ge=1)
    """CPU threads; default: every core (llama-cpp-python's own default is half)."""
    n_batch: int = pydantic.Field(default=512, ge=1)
    chat_format: str | None = None
    """A llama-cpp-python chat format name overriding the template in the GGUF file."""
    completion_prompt: bool | None = None
    """Render messages as a plain prompt (True) or always through a chat template (False);
    default: a plain prompt only when the file has no chat template."""
    verbose: bool = False


class _ComputeThread:
    """The one thread of the process that runs llama.cpp, made on first use.

    It is also the slot resource of every :class:`LlamaCppBackend`, with one slot: the
    executor then hands the thread to waiting calls by critical-path priority, holds a
    call's budget reservation and time limit only while the call really computes, and
    estimates add up the work of all local models as one queue. Slots per instance would
    let two calls hold slots at once, one of them only waiting here in FIFO order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            # A forked child inherits the executor but not its thread: it makes its own.
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
                self._pid = os.getpid()
            return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor(), fn, *args)

    def __repr__(self) -> str:
        return "<llama.cpp compute thread>"


_compute = _ComputeThread()

_LoadKey = tuple[str, int, int, int, int, str | None, bool | None]


class _Instance:
    """One loaded model; it computes only on the shared thread."""

    def __init__(self, path: Path, opts: LlamaOptions) -> None:
        self.path = path
        self.opts = opts
        self.llama: Any = None
        self.chat = True
        self.gpu_offload = False

    async def ensure_loaded(self) -> None:
        if self.llama is None:  # loads run on the one thread, so they never overlap
            await _compute.run(self._load)

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
            n_threads=_threads(o),
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

    def generate(
        self, request: CompletionRequest, cancel: threading.Event
    ) -> dict[str, Any] | None:
        """One call, timed on the thread (waiting for it is not the call's latency); None
        when it was cancelled before it started."""
        if cancel.is_set():
            return None
        start = time.perf_counter()
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
            kwargs["seed"] = sample_seed(s.seed, request.sample_index)
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
        return {
            "text": text,
            "usage": out["usage"],
            "finish_reason": choice.get("finish_reason"),
            "latency_s": time.perf_counter() - start,
        }


def plain_prompt(messages: tuple[ChatMessage, ...]) -> str:
    """A prompt for base models without a chat template: the turns as plain paragraphs."""
    parts = []
    for m in messages:
        parts.append(f"Answer: {m.content}" if m.role == "assistant" else m.content)
    return "\n\n".join(parts) + "\n\n"


def _threads(opts: LlamaOptions) -> int:
    return opts.n_threads or os.cpu_count() or 1


_instances: weakref.WeakValueDictionary[_LoadKey, _Instance] = weakref.WeakValueDictionary()
_instances_lock = threading.Lock()


def _instance(path: Path, opts: LlamaOptions) -> _Instance:
    key: _LoadKey = (
        str(path.resolve()),
        opts.n_ctx,
        opts.n_gpu_layers,
        _threads(opts),
        opts.n_batch,
        opts.chat_format,
        opts.completion_prompt,  # None (auto) and False (always chat) differ on base models
    )
    with _instances_lock:
        inst = _instances.get(key)
        if inst is None:
            inst = _instances[key] = _Instance(path, opts)
        return inst


def _rendering(opts: LlamaOptions) -> str:
    """How messages become a prompt: ``plain``, a chat format name, ``gguf`` (the file's
    template, or plain when it has none) or ``gguf-chat`` (a chat template even then)."""
    if opts.completion_prompt:
        return "plain"
    if opts.chat_format is not None:
        return opts.chat_format
    return "gguf" if opts.completion_prompt is None else "gguf-chat"


class LlamaCppBackend(BackendBase):
    """A GGUF model run in process. ``path`` may be ``pkg:<distribution>/<file>``.

    The id names everything that changes the answers for one file: its content, the
    context length (it cuts answers short) and the rendering of messages. Threads, batch
    size and GPU layers only change how fast the same numbers come out."""

    def __init__(
        self,
        path: str | Path,
        *,
        options: LlamaOptions | None = None,
        price: Price | None = None,
        base_dir: Path | None = None,
    ) -> None:
        resolved = resolve_model_path(str(path), base_dir)
        opts = options or LlamaOptions()
        backend_id = (
            f"llama_cpp:{resolved.name}:{file_fingerprint(resolved)}"
            f":n_ctx={opts.n_ctx}:{_rendering(opts)}"
        )
        super().__init__(backend_id, slots=1, price=price, resource=_compute)
        self._path = resolved
        self._opts = opts
        self._instance = _instance(resolved, opts)

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> LlamaCppBackend:
        if spec.path is None:
            raise GraphValidationError(
                "a llama_cpp model needs 'path': a GGUF file or 'pkg:<distribution>/<file>'",
                path=("models", name),
            )
        if spec.slots not in (None, 1):
            raise GraphValidationError(
                "local llama.cpp models compute one call at a time; 'slots' must be 1 or unset",
                path=("models", name, "slots"),
            )
        try:
            opts = LlamaOptions.model_validate(spec.options)
        except pydantic.ValidationError as exc:
            where = ("models", name, "options")
            raise validation_error(exc, LlamaOptions, path=where, what="option") from None
        try:
            return cls(spec.path, options=opts, price=spec.price, base_dir=base_dir)
        except FileNotFoundError as exc:
            raise GraphValidationError(str(exc), path=("models", name, "path")) from None

    @property
    def path(self) -> Path:
        return self._path

    @property
    def options(self) -> LlamaOptions:
        return self._opts

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
        try:
            out = await _compute.run(inst.generate, request, cancel)
        except asyncio.CancelledError:
            cancel.set()
            raise
        assert out is not None  # only a cancelled call is skipped, and it raised above
        text: str = out["text"]
        if not text.strip():
            raise EmptyCompletion(
                f"{self.id} returned no text (finish_reason={out['finish_reason']!r})",
                backend=self.id,
            )
        usage = Usage(out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"])
        return Completion(
            text, usage, latency_s=out["latency_s"], finish_reason=out["finish_reason"]
        )

    # aclose: BackendBase's no-op. The instance stays loaded while any backend refers to
    # it; weak references free it.
