"""Local GGUF models, in process, through llama-cpp-python.

One llama.cpp instance is loaded per (model file, load options) and shared by every
backend and node that uses it. It serves up to ``parallel`` calls at once, decoded
together step by step (continuous batching, in ``_llama_batch``); the executor's slot pool
for the model has that many slots. All local llama.cpp work of the process (every load and
every decoding step, of every instance) runs on one shared worker thread, never on the
event loop: llama.cpp computes with an OpenMP team, and a second thread's team fights the
first for the cores (two instances called alternately from two threads decode at about a
third of the speed of one). Cancelling a call frees its sequence at the next step.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from agentgraph import (
    BackendBase,
    BackendError,
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

from ._llama_batch import Batcher, Job, SamplerSettings, resolve_future

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
    parallel: int | None = pydantic.Field(default=None, ge=1, le=64)
    """Calls decoded together in one batch (continuous batching); each may use the whole
    ``n_ctx``, so the KV cache holds ``parallel * n_ctx`` tokens. Default: 4 on a CPU-only
    build, 8 when the build offloads to a GPU."""
    chat_format: str | None = None
    """A llama-cpp-python chat format name overriding the template in the GGUF file."""
    completion_prompt: bool | None = None
    """Render messages as a plain prompt (True) or always through a chat template (False);
    default: a plain prompt only when the file has no chat template."""
    verbose: bool = False


class _ComputeThread:
    """The one thread of the process that runs llama.cpp, made on first use.

    Loads run on it, and each loaded model's :class:`Batcher` decodes on it in short
    slices, so two models' OpenMP teams never compute at once; waiting slices are served
    in turn, so two busy models share the thread."""

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

    def submit(self, fn: Callable[[], None]) -> None:
        self.executor().submit(fn)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor(), fn, *args)

    def __repr__(self) -> str:
        return "<llama.cpp compute thread>"


_compute = _ComputeThread()

_LoadKey = tuple[str, int, int, int, int, str | None, bool | None, int]


class _Rendered(Exception):
    """Raised by :class:`_Capture` to carry the prompt a chat handler built."""

    def __init__(self, prompt: list[int], stop: list[str]) -> None:
        self.prompt = prompt
        self.stop = stop


class _Capture:
    """Stands in for ``Llama`` in a llama-cpp-python chat handler: the handler renders and
    tokenizes the messages exactly as ``create_chat_completion`` would, then hands the
    tokens to ``create_completion``, which here stops it and keeps them."""

    def __init__(self, llama: Any) -> None:
        self._llama = llama

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, *, prompt: list[int], stop: Any = None, **_: Any) -> Any:
        stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
        raise _Rendered(list(prompt), stops)


class _Instance:
    """One loaded model with its batcher; it computes only on the shared thread. It is the
    slot resource of its backends, and names that thread as its ``compute``, so estimates
    queue the work of all local models together."""

    compute = _compute

    def __init__(self, path: Path, opts: LlamaOptions, parallel: int) -> None:
        self.path = path
        self.opts = opts
        self.parallel = parallel
        self.llama: Any = None
        self.batcher: Batcher | None = None
        self.chat = True
        self.gpu_offload = False

    async def ensure_loaded(self) -> Batcher:
        if self.batcher is None:  # loads run on the one thread, so they never overlap
            await _compute.run(self._load)
        assert self.batcher is not None
        return self.batcher

    def _load(self) -> None:
        if self.batcher is not None:
            return
        try:
            import llama_cpp
        except ImportError:
            raise MissingDependency(
                "the llama_cpp backend needs llama-cpp-python: pip install 'agentgraph[llama]'"
            ) from None
        o = self.opts
        self.gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        from llama_cpp._utils import suppress_stdout_stderr

        # This Llama loads the weights, tokenizes and renders chat templates; its own
        # context is left small, as the batcher decodes in a context of its own. Quiet
        # unless verbose: llama-cpp-python leaves its context's warnings on (Gemma 3
        # printed one about its sliding-window cache at every load).
        with suppress_stdout_stderr(disable=o.verbose):
            llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=256,
                n_gpu_layers=o.n_gpu_layers if self.gpu_offload else 0,
                n_threads=_threads(o),
                n_batch=min(o.n_batch, 256),
                chat_format=o.chat_format,
                verbose=o.verbose,
            )
        has_template = bool(llama.metadata.get("tokenizer.chat_template"))
        self.chat = (
            not o.completion_prompt
            if o.completion_prompt is not None
            else (has_template or o.chat_format is not None)
        )
        self.batcher = Batcher(
            llama,
            parallel=self.parallel,
            n_ctx=o.n_ctx,
            n_batch=o.n_batch,
            run_on=_compute.submit,
        )
        self.llama = llama

    def render(self, messages: tuple[ChatMessage, ...]) -> tuple[list[int], list[str]]:
        """The prompt's tokens and the template's own stop strings, as llama-cpp-python's
        ``create_chat_completion`` (or ``create_completion`` for a plain prompt) makes
        them."""
        llama = self.llama
        if not self.chat:
            text = plain_prompt(messages).encode("utf-8")
            bos = [llama.token_bos()] if llama._model.add_bos_token() else []
            return bos + llama.tokenize(text, add_bos=False, special=True), []
        handler = (
            llama.chat_handler
            or llama._chat_handlers.get(llama.chat_format)
            or llama_chat_format().get_chat_completion_handler(llama.chat_format)
        )
        try:
            handler(
                llama=_Capture(llama),
                messages=[{"role": m.role, "content": m.content} for m in messages],
            )
        except _Rendered as out:
            return out.prompt, out.stop
        raise RuntimeError(f"the chat handler of {self.path.name} made no completion call")

    def settings(self, request: CompletionRequest, stops: list[str]) -> SamplerSettings:
        """The request's sampling with llama-cpp-python's defaults for what it leaves
        unset (they differ between chat and plain completion)."""
        s = request.sampling

        def pick(value: T | None, default: T) -> T:
            return default if value is None else value

        seed = sample_seed(s.seed, request.sample_index) if s.seed is not None else _RANDOM_SEED
        grammar = None
        if request.constraint is not None:
            c = request.constraint
            grammar = c.grammar if c.grammar is not None else _gbnf(c.canonical())
        return SamplerSettings(
            temperature=pick(s.temperature, 0.2 if self.chat else 0.8),
            top_p=pick(s.top_p, 0.95),
            top_k=pick(s.top_k, 40),
            min_p=pick(s.min_p, 0.05),
            repeat_penalty=pick(s.repeat_penalty, 1.0),
            seed=seed,
            max_tokens=s.max_tokens or 256,
            stop=tuple(x.encode("utf-8") for x in [*(s.stop or ()), *stops] if x),
            grammar=grammar,
        )


_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp draws a seed of its own


def llama_chat_format() -> Any:
    from llama_cpp import llama_chat_format as module

    return module


@functools.lru_cache(maxsize=256)
def _gbnf(schema: str) -> str:
    """A JSON schema as a GBNF grammar (llama-cpp-python's converter, which is what its
    own ``response_format`` uses)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(schema))


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


def default_parallel() -> int:
    """``parallel`` when the options leave it unset. On 2 CPU cores, self-consistency of
    width 4 / 8 decoded 1.2x / 1.5x the tokens per second of calls in turn on SmolLM2-135M
    and 1.4x / 2.0x on Gemma 3 270M (benchmarks/local_throughput.py): 4 keeps a good part of
    the gain for half the KV memory of 8. A GPU gains far more from width."""
    try:
        import llama_cpp
    except ImportError:
        return 4
    return 8 if llama_cpp.llama_supports_gpu_offload() else 4


def _instance(path: Path, opts: LlamaOptions, parallel: int) -> _Instance:
    key: _LoadKey = (
        str(path.resolve()),
        opts.n_ctx,
        opts.n_gpu_layers,
        _threads(opts),
        opts.n_batch,
        opts.chat_format,
        opts.completion_prompt,  # None (auto) and False (always chat) differ on base models
        parallel,
    )
    with _instances_lock:
        inst = _instances.get(key)
        if inst is None:
            inst = _instances[key] = _Instance(path, opts, parallel)
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
    size, ``parallel`` and GPU layers only change how fast the numbers come out (batched
    arithmetic may round a little differently, which can change a token now and then)."""

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
        parallel = opts.parallel or default_parallel()
        backend_id = (
            f"llama_cpp:{resolved.name}:{file_fingerprint(resolved)}"
            f":n_ctx={opts.n_ctx}:{_rendering(opts)}"
        )
        self._path = resolved
        self._opts = opts
        self._instance = _instance(resolved, opts, parallel)
        super().__init__(
            backend_id,
            slots=parallel,
            price=price,
            resource=self._instance,
            constraints=frozenset({"json_schema", "grammar"}),
        )

    @classmethod
    def from_spec(cls, name: str, spec: ModelSpec, base_dir: Path) -> LlamaCppBackend:
        if spec.path is None:
            raise GraphValidationError(
                "a llama_cpp model needs 'path': a GGUF file or 'pkg:<distribution>/<file>'",
                path=("models", name),
            )
        if spec.slots is not None:
            raise GraphValidationError(
                "a local llama.cpp model serves 'options: {parallel: N}' calls at once, "
                "decoded together; remove 'slots' and set 'parallel' instead",
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
    def parallel(self) -> int:
        """Calls this model decodes together."""
        return self._instance.parallel

    @property
    def gpu_offload(self) -> bool:
        """Whether this llama-cpp-python build offloads layers to a GPU (after loading)."""
        return self._instance.gpu_offload

    async def aopen(self) -> None:
        await self._instance.ensure_loaded()

    async def complete(self, request: CompletionRequest) -> Completion:
        inst = self._instance
        batcher = await inst.ensure_loaded()
        prompt, stops = inst.render(request.messages)
        try:
            settings = inst.settings(request, stops)
        except Exception as exc:  # a JSON schema the grammar converter cannot take
            raise BackendError(
                f"{self.id}: bad output constraint: {exc}", backend=self.id
            ) from None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Job] = loop.create_future()
        job = Job(prompt, settings, resolve_future(loop, fut))
        batcher.submit(job)
        try:
            await fut
        except asyncio.CancelledError:
            job.cancelled = True  # its sequence is freed at the next step
            raise
        if job.error is not None:
            raise BackendError(f"{self.id}: {job.error}", backend=self.id) from job.error
        if not job.text.strip():
            raise EmptyCompletion(
                f"{self.id} returned no text (finish_reason={job.finish_reason!r})",
                backend=self.id,
            )
        usage = Usage(len(prompt), job.completion_tokens)
        return Completion(
            job.text,
            usage,
            latency_s=job.decode_s,
            finish_reason=job.finish_reason,
        )

    # aclose: BackendBase's no-op. The instance stays loaded while any backend refers to
    # it; weak references free it.
