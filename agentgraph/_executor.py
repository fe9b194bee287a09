"""The dataflow executor.

There are no supersteps: a node starts the moment its last predecessor finishes (an
``any`` join at its first successful input). The first successor a node makes ready runs
on in that node's task; others get tasks of their own. Model calls then queue for a slot
of their backend's resource; waiting calls are served by critical-path priority (the node
with the most model work still ahead of it first). The call cache, the budget ledger,
retries, per-call time limits (one watchdog timer per run) and the trace all live at the
call site (:meth:`NodeContext.complete`), so roles making several calls get them all.
Router messages turn edges off; nodes whose inputs are all off are skipped, not failed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import weakref
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from ._budget import Ledger
from ._cache import CallCache
from ._errors import (
    BackendError,
    BackendTimeout,
    BudgetExceeded,
    NodeTimeout,
    ReplayMiss,
    TransientBackendError,
    UpstreamFailed,
)
from ._model import ChatMessage, Completion, CompletionRequest, ModelBackend
from ._result import NodeResult, RunResult, Trace, TraceRecord
from ._role import Message, Role
from ._spec import Budget, NodeSpec, RetryPolicy, Sampling, TaskKind, TimeoutPolicy

__all__ = ["NodeContext", "execute"]


@dataclass(frozen=True, slots=True)
class CompiledNode:
    """A node with everything resolved: role instance, backend, effective policies."""

    name: str
    spec: NodeSpec
    role: Role
    model: str | None
    backend: ModelBackend | None
    sampling: Sampling
    retry: RetryPolicy
    timeout: TimeoutPolicy
    preds: tuple[str, ...]
    succs: tuple[str, ...]
    join_any: bool  # starts at the first successful input instead of waiting for all
    cache: bool  # use the run's call cache, if it has one
    priority: float  # lower runs first: minus the model work from here to the output


class SlotPool:
    """A counting semaphore whose waiters are served lowest priority value first."""

    __slots__ = ("_free", "_seq", "_waiters")

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def acquire(self, priority: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1


# One pool per (event loop, resource): concurrent runs in a loop share backend limits.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, SlotPool]] = (
    weakref.WeakKeyDictionary()
)


class _Watch:
    __slots__ = ("done", "expired")

    def __init__(self) -> None:
        self.done = False
        self.expired = False


class _Watchdog:
    """Per-call time limits of one run on a single loop timer: a call costs a heap push,
    not a timer of its own. An expired call's task is cancelled; the call site turns that
    into :class:`BackendTimeout`."""

    __slots__ = ("_handle", "_heap", "_loop", "_seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Task[Any], _Watch]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._seq = itertools.count()

    def watch(self, seconds: float, task: asyncio.Task[Any]) -> _Watch:
        heap = self._heap
        while heap and heap[0][3].done:
            heapq.heappop(heap)
        watch = _Watch()
        deadline = self._loop.time() + seconds
        heapq.heappush(heap, (deadline, next(self._seq), task, watch))
        if self._handle is None or deadline < self._handle.when():
            self._arm()
        return watch

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(self._heap[0][0], self._fire) if self._heap else None

    def _fire(self) -> None:
        heap, now = self._heap, self._loop.time()
        while heap and (heap[0][0] <= now or heap[0][3].done):
            _, _, task, watch = heapq.heappop(heap)
            if not watch.done:
                watch.expired = True
                task.cancel()
        self._handle = None
        self._arm()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._heap.clear()


class NodeContext:
    """What a role sees while it runs: the task, its node, and a traced model call."""

    __slots__ = ("_calls", "_node", "_run")

    def __init__(self, run: _Run, node: CompiledNode) -> None:
        self._run = run
        self._node = node
        self._calls: list[TraceRecord] = []

    @property
    def question(self) -> str:
        return self._run.question

    @property
    def node(self) -> str:
        return self._node.name

    @property
    def spec(self) -> NodeSpec:
        return self._node.spec

    @property
    def sampling(self) -> Sampling:
        return self._node.sampling

    @property
    def task(self) -> TaskKind:
        """The kind of task the graph solves; roles pick default prompts and parsers by it."""
        return self._run.task

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        sampling: Sampling | None = None,
        sample_index: int = 0,
    ) -> Completion:
        """Call this node's model through the cache, the budget ledger, the backend's slot
        pool, retries and timeouts; every call is traced."""
        node, run = self._node, self._run
        backend = node.backend
        if backend is None:
            raise BackendError(f"node {node.name!r} has no model", node=node.name)
        eff = sampling.over(node.sampling) if sampling is not None else node.sampling
        msgs = tuple(messages)
        sample_index = run.sample_index((backend.id, msgs, eff), sample_index)
        request = CompletionRequest(msgs, eff, sample_index)
        cache = run.cache if node.cache else None
        if cache is not None:
            hit = cache.get(backend.id, request)
            if hit is not None:
                self._record(request, hit, perf_counter(), 0, 0.0)
                return hit
            if cache.mode == "replay":
                miss = ReplayMiss(
                    f"replay cache {cache.path!r} has no call of node {node.name!r} "
                    f"(sample {sample_index}) for {backend.id}",
                    backend=backend.id,
                    node=node.name,
                )
                self._record(request, None, perf_counter(), 0, 0.0, miss)
                raise miss
        try:
            held, request = run.ledger.reserve(node.name, request, backend.price)
        except BudgetExceeded as exc:
            self._record(request, None, perf_counter(), 0, 0.0, exc)
            raise
        usage = None
        try:
            done = await self._dispatch(backend, request)
            usage = None if done.cached else done.usage
        finally:
            run.ledger.settle(held, usage)
        if cache is not None:
            cache.put(backend.id, request, done)
        return done

    async def _dispatch(self, backend: ModelBackend, request: CompletionRequest) -> Completion:
        node, run = self._node, self._run
        pool = run.pool(backend)
        retry, call_s = node.retry, node.timeout.call_s
        attempts, queued, first = 0, 0.0, 0.0
        task = asyncio.current_task()
        assert task is not None
        while True:
            attempts += 1
            t_queue = perf_counter()
            await pool.acquire(node.priority)
            t_call = perf_counter()
            queued += t_call - t_queue
            if attempts == 1:
                first = t_call
            error: BaseException
            watch = run.watchdog.watch(call_s, task) if call_s is not None else None
            try:
                done = await backend.complete(request)
            except asyncio.CancelledError:
                if watch is None or not watch.expired or task.uncancel() > 0:
                    raise
                error = BackendTimeout(
                    f"call to {backend.id} timed out after {call_s:g}s",
                    backend=backend.id,
                    node=node.name,
                )
            except Exception as exc:
                error = exc
            else:
                self._record(request, done, first, attempts, queued)
                return done
            finally:
                if watch is not None:
                    watch.done = True
                pool.release()
            if isinstance(error, BackendError) and error.node is None:
                error.node = node.name
            if not isinstance(error, TransientBackendError) or attempts >= retry.max_attempts:
                self._record(request, None, first, attempts, queued, error)
                raise error
            delay = retry.delay(attempts, random.random())
            if error.retry_after_s is not None:
                delay = max(delay, min(error.retry_after_s, retry.max_backoff_s))
            await asyncio.sleep(delay)

    def _record(
        self,
        request: CompletionRequest,
        done: Completion | None,
        first: float,
        attempts: int,
        queued: float,
        error: BaseException | None = None,
    ) -> None:
        node, run = self._node, self._run
        assert node.backend is not None and node.model is not None
        now = perf_counter()
        usage = done.usage if done is not None and not done.cached else None
        rec = TraceRecord(
            node=node.name,
            model=node.model,
            backend=node.backend.id,
            request=request,
            output=done.text if done is not None else None,
            started_s=first - run.t0,
            latency_s=now - first,
            queued_s=queued,
            attempts=attempts,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=node.backend.price.cost(usage.prompt_tokens, usage.completion_tokens)
            if usage
            else 0.0,
            cached=done.cached if done is not None else False,
            finish_reason=done.finish_reason if done is not None else None,
            error=f"{type(error).__name__}: {error}" if error is not None else None,
        )
        self._calls.append(rec)
        run.trace.append(rec)


class _Taken:
    __slots__ = ("floor", "used")

    def __init__(self) -> None:
        self.floor = 0
        self.used: set[int] = set()


class _Run:
    def __init__(
        self,
        nodes: Mapping[str, CompiledNode],
        question: str,
        task: TaskKind,
        cache: CallCache | None,
        budget: Budget | None,
    ) -> None:
        self.nodes = nodes
        self.question = question
        self.task = task
        self.cache = cache
        self.ledger = Ledger(budget)
        self.follow_routes = True

        # Per identical call: [lowest index not known to be taken, indices taken].
        self.samples: dict[Hashable, _Taken] = {}
        self.loop = asyncio.get_running_loop()
        self.watchdog = _Watchdog(self.loop)
        self._pools = _pools.setdefault(self.loop, {})
        self.t0 = perf_counter()
        self.trace: list[TraceRecord] = []
        self.results: dict[str, NodeResult] = {}
        self.pending = {name: len(n.preds) for name, n in nodes.items()}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.started: dict[str, float] = {}
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.losers: set[str] = set()

    def sample_index(self, call: Hashable, requested: int) -> int:
        """Identical calls in one run are separate samples (e.g. N equal proposers): each
        takes the next free sample index, which seeds it apart and keys it in the cache."""
        taken = self.samples.get(call)
        if taken is None:
            taken = self.samples[call] = _Taken()
        used = taken.used
        index = max(requested, taken.floor)  # every index below floor is taken
        while index in used:
            index += 1
        used.add(index)
        while taken.floor in used:
            taken.floor += 1
        return index

    def pool(self, backend: ModelBackend) -> SlotPool:
        pool = self._pools.get(backend.resource)
        if pool is None:
            pool = self._pools[backend.resource] = SlotPool(backend.slots)
        return pool

    def start(self, name: str) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.loop.create_task(self._drive(name))

    async def _drive(self, name: str | None) -> None:
        # A finished node's first ready successor runs on in the same task: no new task
        # and no extra trip through the event loop for the common step along a chain.
        while name is not None:
            name = await self._node(name)

    def _input(self, pred: str, name: str) -> Message:
        res = self.results.get(pred)
        if res is None:  # an "any" join started before this input finished
            return Message(pred, self.nodes[pred].spec.role, skipped=True)
        msg = res.message
        if self.follow_routes and msg.routes is not None and name not in msg.routes and msg.ok:
            return Message(pred, msg.role, skipped=True)  # a router turned this edge off
        return msg

    async def _node(self, name: str) -> str | None:
        node = self.nodes[name]
        started = perf_counter()
        self.started[name] = started
        ctx = NodeContext(self, node)
        inputs = [self._input(p, name) for p in node.preds]
        if node.join_any:
            self._cancel_losers(node)
        try:
            msg = await self._message(node, ctx, inputs)
        except asyncio.CancelledError:
            if name not in self.losers:
                raise
            self.tasks[name].uncancel()  # the task may go on to run another node
            msg = Message(name, node.spec.role, skipped=True, data={"lost_race": True})
        except BaseException as exc:  # a bug in the executor itself: fail the run loudly
            if not self.done.done():
                self.done.set_exception(exc)
            raise
        return self.finish(node, msg, started, ctx._calls)

    async def _message(
        self, node: CompiledNode, ctx: NodeContext, inputs: list[Message]
    ) -> Message:
        if inputs and not any(m.ok for m in inputs):
            if all(m.skipped for m in inputs):
                return Message(node.name, node.spec.role, skipped=True)
            failed = [m.node for m in inputs if m.error is not None]
            return Message(node.name, node.spec.role, error=UpstreamFailed(node.name, failed))
        node_s = node.timeout.node_s
        try:
            if node_s is None:
                return await node.role.run(ctx, inputs)
            async with asyncio.timeout(node_s) as scope:
                return await node.role.run(ctx, inputs)
        except Exception as exc:
            error: Exception = exc
            if isinstance(exc, TimeoutError) and node_s is not None and scope.expired():
                message = f"node {node.name!r} timed out after {node_s:g}s"
                error = NodeTimeout(message, node=node.name)
            return Message(node.name, node.spec.role, error=error)

    def finish(
        self, node: CompiledNode, msg: Message, started: float, calls: Sequence[TraceRecord]
    ) -> str | None:
        """Record the node's result and start the successors it made ready; the first of
        them is returned to run on in this node's task."""
        t0 = self.t0
        self.results[node.name] = NodeResult(
            node.name,
            node.spec.role,
            node.model,
            node.preds,
            msg,
            started - t0,
            perf_counter() - t0,
            tuple(calls),
        )
        pending, tasks = self.pending, self.tasks
        inline = None
        for succ in node.succs:
            pending[succ] -= 1
            if succ in tasks:
                continue
            if not pending[succ] or (self.nodes[succ].join_any and self._input(node.name, succ).ok):
                if inline is None:
                    inline = succ
                    tasks[succ] = tasks[node.name]
                else:
                    self.start(succ)
        if len(self.results) == len(self.nodes) and not self.done.done():
            self.done.set_result(None)
        return inline

    def _cancel_losers(self, node: CompiledNode) -> None:
        """An "any" join has started: inputs still running that nobody else waits for are
        cancelled (hedged requests), and reported as skipped."""
        for pred in node.preds:
            task = self.tasks.get(pred)
            if pred in self.results or task is None or task.done():
                continue
            if all(s in self.tasks for s in self.nodes[pred].succs):
                self.losers.add(pred)
                task.cancel()

    async def abort(self, reason: BaseException | None) -> None:
        """Cancel unfinished nodes; with a ``reason`` record them as failed with it."""
        live = [t for t in self.tasks.values() if not t.done()]
        for task in live:
            task.cancel()
        await asyncio.gather(*live, return_exceptions=True)
        if reason is None:
            return
        for name, node in self.nodes.items():
            if name not in self.results:
                started = self.started.get(name, perf_counter())
                msg = Message(name, node.spec.role, error=reason)
                self.results[name] = NodeResult(
                    name,
                    node.spec.role,
                    node.model,
                    node.preds,
                    msg,
                    started - self.t0,
                    perf_counter() - self.t0,
                    (),
                )


async def execute(
    nodes: Mapping[str, CompiledNode],
    order: Sequence[str],
    output: str,
    question: str,
    *,
    task: TaskKind = "text",
    timeout_s: float | None = None,
    cache: CallCache | None = None,
    budget: Budget | None = None,
    follow_routes: bool = True,
) -> RunResult:
    run = _Run(nodes, question, task, cache, budget)
    run.follow_routes = follow_routes
    latency_s = budget.latency_s if budget is not None else None
    limit = min((t for t in (timeout_s, latency_s) if t is not None), default=None)
    for name in order:
        if not nodes[name].preds:
            run.start(name)
    try:
        async with asyncio.timeout(limit):
            await run.done
    except TimeoutError:
        assert limit is not None
        reason: Exception
        if limit == latency_s:
            spent = perf_counter() - run.t0
            reason = BudgetExceeded("latency", spent=spent, limit=limit, node=output)
        else:
            reason = NodeTimeout(f"run time limit of {limit:g}s reached", node=output)
        await run.abort(reason)
    except BaseException:
        await run.abort(None)
        raise
    finally:
        run.watchdog.close()
    ordered = {name: run.results[name] for name in order}
    return RunResult(question, output, ordered, Trace(tuple(run.trace)), perf_counter() - run.t0)
