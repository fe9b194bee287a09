"""Continuous batching for one loaded llama.cpp model.

The calls of one model are decoded together, one token per call per step, in one
``llama_decode`` over several sequence ids (as llama.cpp's ``examples/parallel`` and the
server's slots do). Calls join between steps as they arrive and leave when they finish.
Each call samples through its own llama.cpp sampler chain (penalties, an optional grammar,
top-k/typical/top-p/min-p, temperature, a seeded draw: the chain the high-level
``Llama.create_completion`` builds, so one call alone decodes as it would there).

Each sequence has a KV stream of its own. A prompt that starts like one already in the
cache (the same question sent to several proposers, or a call repeated after an earlier
one) copies that stream and keeps the common start instead of computing it again. A
finished call's cells stay as a prompt cache until its sequence id is needed.

All of this runs on the process's one llama.cpp compute thread, in slices of a few
steps: between slices the thread serves other loaded models in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batcher", "Job", "SamplerSettings", "resolve_future"]

_SLICE_S = 0.05
"""Longest run of steps before the compute thread is offered to other models' work."""
_MIN_SHARED = 4
"""Shorter common prefixes are computed again rather than copied (not worth a copy)."""


@dataclass(frozen=True, slots=True)
class SamplerSettings:
    """Resolved sampling of one call (llama-cpp-python's defaults already applied)."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int
    max_tokens: int
    stop: tuple[bytes, ...] = ()
    grammar: str | None = None


@dataclass(eq=False, slots=True)
class Job:
    """One call: its prompt tokens and sampling in; its outcome out, set on the compute
    thread and handed to ``done`` (called on that thread)."""

    prompt: list[int]
    settings: SamplerSettings
    done: Callable[[Job], None]
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    # outcome
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: BaseException | None = None
    queued_s: float = 0.0
    decode_s: float = 0.0
    shared_prefix: int = 0
    # decoding state
    _sampler: Any = None
    _grammar: Any = None
    _out: bytearray = field(default_factory=bytearray)
    _next: int = -1
    _started: float = 0.0


class _Slot:
    """A sequence id and what its KV cells hold (tokens at positions 0..len-1)."""

    __slots__ = ("cells", "id", "job")

    def __init__(self, seq_id: int) -> None:
        self.id = seq_id
        self.job: Job | None = None
        self.cells: list[int] = []


def _job(slot: _Slot) -> Job:
    assert slot.job is not None
    return slot.job


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Batcher:
    """Decodes the calls of one model together. ``submit`` may be called from any thread;
    every llama.cpp call happens in slices run by ``run_on`` (the compute thread)."""

    def __init__(
        self,
        llama: Any,
        *,
        parallel: int,
        n_ctx: int,
        n_batch: int,
        run_on: Callable[[Callable[[], None]], None],
    ) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._llama = llama  # the weights outlive this context: it is freed first
        self._model = llama._model.model
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = n_ctx
        self._n_batch = n_batch
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_ctx = n_ctx * parallel  # a KV stream of n_ctx cells per sequence
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = parallel
        # One stream per sequence. In a unified cache, a prompt prefilled beside other
        # sequences' cells got logits up to 0.38 away from the same prompt alone, and
        # greedy answers decoded together matched answers decoded alone for 1 of 8
        # prompts; with a stream each they match exactly.
        params.kv_unified = False
        from llama_cpp._utils import suppress_stdout_stderr

        self._ctx = None
        with suppress_stdout_stderr(disable=llama.verbose):  # quiet unless verbose, as loads
            self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise RuntimeError(f"llama.cpp could not make a context for {parallel} sequences")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(max(n_batch, parallel), 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self._buffer: Any = None
        self._view: Any = None
        self._ids: Any = None
        self._slots = [_Slot(i) for i in range(parallel)]
        self._run_on = run_on
        self._lock = threading.Lock()
        self._pending: deque[Job] = deque()
        self._scheduled = False

    # -- any thread ----------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._lock:
            self._pending.append(job)
            if self._scheduled:
                return
            self._scheduled = True
        self._run_on(self._slice)

    def __del__(self) -> None:
        # Unreferenced, so no slice is queued or running: nothing else touches the context.
        if self._ctx:
            for slot in self._slots:
                if slot.job is not None:
                    self._release(slot, slot.job)
            self._lib.llama_batch_free(self._batch)
            self._lib.llama_free(self._ctx)
            self._ctx = None
        self._llama = None

    # -- compute thread -------------------------------------------------------------

    def _slice(self) -> None:
        try:
            deadline = time.perf_counter() + _SLICE_S
            while True:
                self._admit()
                active = [s for s in self._slots if s.job is not None]
                if not active:
                    break
                self._step(active)
                if time.perf_counter() > deadline:
                    break
        except BaseException as exc:  # llama.cpp failed: every call in flight fails
            self._fail_all(exc)
        finally:
            with self._lock:
                busy = bool(self._pending) or any(s.job for s in self._slots)
                self._scheduled = busy
            if self._scheduled:
                self._run_on(self._slice)

    def _admit(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                slot = self._free_slot(self._pending[0].prompt)
                if slot is None:
                    return
                job = self._pending.popleft()
            if job.cancelled:
                continue
            try:
                self._start(job, slot)
            except Exception as exc:  # a bad grammar or prompt fails its own call only
                slot.cells = []
                self._lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
                self._fail(slot, job, exc)

    def _free_slot(self, prompt: list[int]) -> _Slot | None:
        """An idle sequence id, preferring one whose cells already hold the longest start of
        ``prompt`` (its cells are then reused in place)."""
        idle = [s for s in self._slots if s.job is None]
        if not idle:
            return None
        return max(idle, key=lambda s: (_common_prefix(s.cells, prompt), -len(s.cells)))

    def _start(self, job: Job, slot: _Slot) -> None:
        lib, prompt = self._lib, job.prompt
        if len(prompt) >= self.n_ctx:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens and does not fit n_ctx={self.n_ctx} "
                "with room for an answer; raise the model's n_ctx option"
            )
        job._started = time.perf_counter()
        job.queued_s = job._started - job.submitted
        job._sampler, job._grammar = self._samplers(job.settings)
        slot.job = job
        # Reuse the longest prefix held anywhere in the cache; the last prompt token is
        # always decoded again, as its logits give the first answer token.
        own = _common_prefix(slot.cells, prompt)
        donor, shared = slot, own
        for other in self._slots:
            if other is not slot:
                n = _common_prefix(other.cells, prompt)
                if n > shared:
                    donor, shared = other, n
        shared = min(shared, len(prompt) - 1)
        if shared < _MIN_SHARED:
            shared = 0
        if donor is not slot:  # streams are copied whole (llama.cpp's rule), then cut
            lib.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
            lib.llama_memory_seq_cp(self._mem, donor.id, slot.id, -1, -1)
        lib.llama_memory_seq_rm(self._mem, slot.id, shared, -1)
        slot.cells = prompt[:shared]
        job.shared_prefix = shared
        for begin in range(shared, len(prompt), self._n_batch):
            chunk = prompt[begin : begin + self._n_batch]
            last = begin + len(chunk) == len(prompt)
            self._fill(
                [(t, begin + i, slot.id, last and i == len(chunk) - 1) for i, t in enumerate(chunk)]
            )
            self._decode()
            slot.cells.extend(chunk)
        self._take(slot, self._sample(job, -1))

    def _step(self, active: list[_Slot]) -> None:
        live = []
        for slot in active:
            job = slot.job
            assert job is not None
            if job.cancelled:
                self._release(slot, job)
            else:
                live.append(slot)
        if not live:
            return
        self._fill([(_job(s)._next, len(s.cells), s.id, True) for s in live])
        self._decode()
        for i, slot in enumerate(live):
            job = slot.job
            assert job is not None
            slot.cells.append(job._next)
            self._take(slot, self._sample(job, i))

    def _take(self, slot: _Slot, token: int) -> None:
        """Record a sampled token; finish the call on end of generation, a stop string,
        max_tokens or a full context."""
        job = slot.job
        assert job is not None
        lib, s = self._lib, job.settings
        if lib.llama_vocab_is_eog(self._vocab, token):
            return self._finish(slot, "stop")
        job.completion_tokens += 1
        n = lib.llama_token_to_piece(self._vocab, token, self._piece, 256, 0, False)
        piece = self._piece.raw[: max(n, 0)]
        job._out += piece
        if s.stop:
            window = bytes(job._out[-(len(piece) + max(map(len, s.stop))) :])
            offset = len(job._out) - len(window)
            hits = [window.find(stop) for stop in s.stop]
            hits = [h for h in hits if h >= 0]
            if hits:
                del job._out[offset + min(hits) :]
                return self._finish(slot, "stop")
        if job.completion_tokens >= s.max_tokens or len(slot.cells) + 1 >= self.n_ctx:
            return self._finish(slot, "length")
        job._next = token
        return None

    def _finish(self, slot: _Slot, reason: str) -> None:
        job = slot.job
        assert job is not None
        job.finish_reason = reason
        job.text = job._out.decode("utf-8", errors="ignore")
        job.decode_s = time.perf_counter() - job._started
        self._release(slot, job)
        job.done(job)

    def _release(self, slot: _Slot, job: Job) -> None:
        for sampler in (job._sampler, job._grammar):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        job._sampler = job._grammar = None
        slot.job = None  # its cells stay, as a prompt cache

    def _fail(self, slot: _Slot, job: Job, exc: BaseException) -> None:
        self._release(slot, job)
        job.error = exc
        job.done(job)

    def _fail_all(self, exc: BaseException) -> None:
        self._lib.llama_memory_clear(self._mem, True)
        for slot in self._slots:
            slot.cells = []
            if slot.job is not None:
                self._fail(slot, slot.job, exc)

    def _fill(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        b = self._batch
        b.n_tokens = len(tokens)
        for i, (token, pos, seq, logits) in enumerate(tokens):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits

    def _decode(self) -> None:
        rc = self._lib.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed (code {rc})")

    def _samplers(self, s: SamplerSettings) -> tuple[Any, Any]:
        """The chain ``Llama._init_sampler`` builds for the same settings, and the grammar
        (kept apart: see :meth:`_sample`)."""
        lib = self._lib
        grammar = None
        if s.grammar is not None:
            grammar = lib.llama_sampler_init_grammar(self._vocab, s.grammar.encode(), b"root")
            if not grammar:
                raise ValueError("llama.cpp could not parse the grammar of the call")
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        add = lib.llama_sampler_chain_add
        add(chain, lib.llama_sampler_init_penalties(self._n_vocab, 64, s.repeat_penalty, 0.0, 0.0))
        if s.temperature == 0.0:
            add(chain, lib.llama_sampler_init_greedy())
        else:
            add(chain, lib.llama_sampler_init_top_k(s.top_k))
            add(chain, lib.llama_sampler_init_typical(1.0, 1))
            add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
            add(chain, lib.llama_sampler_init_min_p(s.min_p, 1))
            add(chain, lib.llama_sampler_init_temp(s.temperature))
            add(chain, lib.llama_sampler_init_dist(s.seed))
        return chain, grammar

    def _sample(self, job: Job, index: int) -> int:
        """The next token of ``job`` from the logits at batch ``index``.

        A grammar that filtered the whole vocabulary at every step made constrained
        calls about 1.4x slower per token. So, as llama.cpp's own common sampler does, the
        token is drawn without the grammar and checked against it alone; only a token the
        grammar refuses costs a draw over the vocabulary with the grammar applied. (The
        refused draw stays in the repeat-penalty window; with the default penalty of 1
        that changes nothing.)"""
        lib, chain, grammar = self._lib, job._sampler, job._grammar
        token = int(lib.llama_sampler_sample(chain, self._ctx, index))
        if grammar is None:
            return token
        one = self._candidates(1)
        one.data[0].id, one.data[0].logit, one.data[0].p = token, 1.0, 0.0
        lib.llama_sampler_apply(grammar, ctypes.byref(one))
        if one.data[0].logit == float("-inf"):
            logits = lib.llama_get_logits_ith(self._ctx, index)
            every = self._candidates(self._n_vocab, logits)
            lib.llama_sampler_apply(grammar, ctypes.byref(every))
            lib.llama_sampler_apply(chain, ctypes.byref(every))
            token = int(every.data[every.selected].id)
        lib.llama_sampler_accept(grammar, token)
        return token

    def _candidates(self, n: int, logits: Any = None) -> Any:
        """A token data array of the first ``n`` tokens (with their logits if given),
        over one buffer allocated once."""
        import numpy as np  # llama-cpp-python's own dependency

        lib = self._lib
        if self._buffer is None:
            self._buffer = (lib.llama_token_data * self._n_vocab)()
            fields = [("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]
            self._view = np.frombuffer(self._buffer, dtype=np.dtype(fields))
            self._ids = np.arange(self._n_vocab, dtype=np.int32)
        buf = self._buffer
        if logits is not None:
            view = self._view
            view["id"] = self._ids
            view["logit"] = np.ctypeslib.as_array(logits, shape=(n,))
            view["p"] = 0.0
        array = lib.llama_token_data_array()
        array.data = ctypes.cast(buf, ctypes.POINTER(lib.llama_token_data))
        array.size, array.selected, array.sorted = n, -1, False
        return array


def resolve_future(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Job]
) -> Callable[[Job], None]:
    """A ``Job.done`` that hands the finished job to ``fut`` on its own loop."""

    def done(job: Job) -> None:
        def settle() -> None:
            if not fut.done():
                fut.set_result(job)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle)

    return done
