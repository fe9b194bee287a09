"""The dataflow executor.

There are no supersteps: a node starts the moment its last predecessor finishes (an
``any`` join at its first successful input). The first successor a node makes ready runs
on in that node's task; others get tasks of their own. Model calls then queue for a slot
of their backend's resource; waiting calls are served by critical-path priority (the node
with the most model work still ahead of it first). The call cache (with single-flight), the
budget ledger, retries, per-call time limits (one watchdog timer per run) and the trace all
live at the call site (:class:`_NodeCalls`), so roles making several calls get them all.
Router messages turn edges off; nodes whose inputs are all off are skipped, not failed.
When an ``any`` join starts, every unfinished node that no longer feeds a node still
waiting for inputs lost the race: it is recorded as skipped at once and its task cancelled.

A run always ends: a role's wrong return type or stray ``CancelledError`` fails its node, an
internal error fails the run with that exception, and the run's time limit covers opening
the backends and does not wait more than a short grace for tasks that ignore cancellation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import random
import weakref
from collections.abc import Awaitable, Hashable, Mapping, Sequence
from dataclasses import dataclass
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
from ._model import (
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelBackend,
    OutputConstraint,
    Usage,
)
from ._result import NodeResult, RunResult, Trace, TraceRecord
from ._role import Message, NodeContext, Role, check_constraint
from ._spec import Budget, NodeSpec, RetryPolicy, Sampling, TaskKind, TimeoutPolicy

__all__ = ["execute"]

log = logging.getLogger("agentgraph")

ABANDON_AFTER_S = 1.0
"""How long a run that is being cut waits for cancelled nodes; a role that ignores
cancellation is abandoned after that, and its node reported as failed."""


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
    """A counting semaphore whose waiters are served lowest priority value first. Backends
    that share a resource but declare different slots get the smallest."""

    __slots__ = ("__weakref__", "_free", "_seq", "_waiters", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def shrink_to(self, capacity: int) -> None:
        if capacity < self.capacity:
            self._free -= self.capacity - capacity
            self.capacity = capacity

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
        if self._free >= 0:
            while self._waiters:
                _, _, fut = heapq.heappop(self._waiters)
                if not fut.done():
                    fut.set_result(None)
                    return
        self._free += 1


# One pool per (event loop, resource), so concurrent runs in a loop share backend limits.
# Both levels are weak: a pool lives while a run uses it, a loop's table while the loop does,
# so neither keeps backends (or the models they loaded) alive.
_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakValueDictionary[Hashable, SlotPool]
] = weakref.WeakKeyDictionary()


def slot_pool(backend: ModelBackend) -> SlotPool:
    """The running loop's slot pool for ``backend``'s resource."""
    table = _pools.get(asyncio.get_running_loop())
    if table is None:
        table = _pools[asyncio.get_running_loop()] = weakref.WeakValueDictionary()
    pool = table.get(backend.resource)
    if pool is None:
        pool = table[backend.resource] = SlotPool(backend.slots)
    else:
        pool.shrink_to(backend.slots)
    return pool


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


class _Attempts:
    """What the attempts of one call add up to, for its trace record."""

    __slots__ = ("charged_cost", "charged_tokens", "count", "first", "queued")

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None  # when the first attempt got its slot
        self.queued = 0.0
        self.charged_tokens = 0
        self.charged_cost = 0.0


class _NodeCalls:
    """The model calls of one node: the executor's side of :meth:`NodeContext.complete`."""

    __slots__ = ("_node", "_run", "records")

    def __init__(self, run: _Run, node: CompiledNode) -> None:
        self._run = run
        self._node = node
        self.records: list[TraceRecord] = []

    def context(self) -> NodeContext:
        node, run = self._node, self._run
        return NodeContext(
            run.question,
            node=node.name,
            spec=node.spec,
            task=run.task,
            choices=run.choices,
            sampling=node.sampling,
            backend=node.backend,
            call=self.complete,
        )

    async def complete(
        self,
        ctx: NodeContext,
        messages: Sequence[ChatMessage],
        sampling: Sampling | None,
        sample_index: int,
        constraint: OutputConstraint | None,
    ) -> Completion:
        """One call through the cache (and single-flight), the ledger, the backend's slot
        pool, retries and time limits; every call is traced."""
        node, run = self._node, self._run
        backend = node.backend
        if backend is None:
            raise BackendError(f"node {node.name!r} has no model", node=node.name)
        eff = sampling.over(node.sampling) if sampling is not None else node.sampling
        msgs = tuple(messages)
        if constraint is None:
            sample_index = run.sample_index((backend.id, msgs, eff), sample_index)
        else:
            check_constraint(constraint, backend, node.name)
            # Calls differing only in their constraint are not repeats of one another.
            sample_index = run.sample_index((backend.id, msgs, eff, constraint), sample_index)
        request = CompletionRequest(msgs, eff, sample_index, constraint)
        cache = run.cache if node.cache else None
        if cache is None:
            return (await self._dispatch(backend, request, None))[0]
        key = cache.key(backend.id, request)
        while True:
            start = run.clock()
            hit = await cache.alookup(key)
            if hit is not None:
                return self._hit(request, hit, start)
            if cache.mode == "replay":
                miss = ReplayMiss(
                    f"replay cache {cache.path!r} has no call of node {node.name!r} "
                    f"(sample {sample_index}) for {backend.id}",
                    backend=backend.id,
                    node=node.name,
                )
                self._record(request, None, _Attempts(), miss)
                raise miss
            flight = cache.flights.get(key)
            if flight is None:
                break
            shared = await asyncio.shield(flight)  # an identical call is in flight: await it
            if shared is not None:
                return self._hit(request, shared, start)
            # It failed: make the call ourselves (after one more look, as above).
        flight = asyncio.get_running_loop().create_future()
        cache.flights[key] = flight
        done: Completion | None = None
        filed: Completion | None = None
        sent = request
        try:
            done, sent = await self._dispatch(backend, request, cache)
            filed = self._filed(done)
            # An answer cut short by a budget's cap is not the answer to the request as
            # built: file it under the capped request.
            capped = sent is not request and done.finish_reason == "length"
            where = cache.key(backend.id, sent) if capped else key
            try:
                await cache.astore(where, backend.id, filed)
            except Exception as exc:  # the call succeeded and was paid for: keep it
                log.warning(
                    "call cache %s: could not store a call of %r: %s", cache.path, node.name, exc
                )
        finally:
            del cache.flights[key]
            flight.set_result(filed if sent is request else None)
        return done

    def _filed(self, done: Completion) -> Completion:
        """What the cache keeps and identical calls in flight receive: the figures this
        call's trace record holds (its measured latency; unknown usage as what the ledger
        charged), so a hit reports exactly what the original call's trace said."""
        rec = self.records[-1]
        usage = done.usage or Usage(rec.prompt_tokens, rec.completion_tokens)
        return dataclasses.replace(done, usage=usage, latency_s=rec.latency_s)

    def _hit(self, request: CompletionRequest, done: Completion, start: float) -> Completion:
        hit = done if done.cached else dataclasses.replace(done, cached=True)
        attempts = _Attempts()
        attempts.first = start
        self._record(request, hit, attempts)
        return hit

    async def _dispatch(
        self, backend: ModelBackend, request: CompletionRequest, cache: CallCache | None
    ) -> tuple[Completion, CompletionRequest]:
        """Attempts until one succeeds: each waits for a slot, then reserves its budget.
        Returns the completion and the request as sent (capped by the budget, perhaps)."""
        node, run = self._node, self._run
        pool = run.pools[backend.resource]
        retry, call_s = node.retry, node.timeout.call_s
        tally = _Attempts()
        task = asyncio.current_task()
        assert task is not None
        sent = request
        while True:
            tally.count += 1
            t_queue = run.clock()
            await pool.acquire(node.priority)
            t_call = run.clock()
            tally.queued += t_call - t_queue
            if tally.count == 1:
                tally.first = t_call
            error: BaseException | None = None
            done: Completion | None = None
            held = None
            try:
                held, sent = run.ledger.reserve(
                    node.name, request, backend.price, run.model_nodes_left
                )
                if cache is not None and sent is not request:  # capped: maybe filed so
                    hit = await cache.alookup(cache.key(backend.id, sent))
                    if hit is not None:
                        run.ledger.settle(held, Usage())
                        held = None
                        self._record(sent, hit, tally)
                        return hit, sent
                watch = run.watchdog.watch(call_s, task) if call_s is not None else None
                try:
                    done = await backend.complete(sent)
                except asyncio.CancelledError:
                    if watch is None or not watch.expired or task.uncancel() > 0:
                        raise
                    error = BackendTimeout(
                        f"call to {backend.id} timed out after {call_s:g}s",
                        backend=backend.id,
                        node=node.name,
                    )
                finally:
                    if watch is not None:
                        watch.done = True
            except asyncio.CancelledError:
                self._record(sent, None, tally, "cancelled", held)
                held = None
                raise
            except Exception as exc:
                error = exc
            finally:
                pool.release()
                if held is not None and error is not None:
                    charged, cost = run.ledger.settle(held, None)
                    tally.charged_tokens += charged.total_tokens
                    tally.charged_cost += cost
            if done is not None:
                assert held is not None
                self._record(sent, done, tally, None, held)
                return done, sent
            assert error is not None
            if isinstance(error, BackendError) and error.node is None:
                error.node = node.name
            if not isinstance(error, TransientBackendError) or tally.count >= retry.max_attempts:
                self._record(sent, None, tally, error)
                raise error
            delay = retry.delay(tally.count, random.random())
            if error.retry_after_s is not None:
                delay = max(delay, min(error.retry_after_s, retry.max_backoff_s))
            await asyncio.sleep(delay)

    def _record(
        self,
        request: CompletionRequest,
        done: Completion | None,
        tally: _Attempts,
        error: BaseException | str | None = None,
        held: Any = None,
    ) -> None:
        """Trace one call. ``held``: the last attempt's reservation, settled here with the
        usage of ``done`` (or in full, when there is none)."""
        node, run = self._node, self._run
        backend = node.backend
        assert backend is not None and node.model is not None
        now = run.clock()
        usage = done.usage if done is not None else None
        known = usage is not None
        cached = done is not None and done.cached
        true_cost: float | None = None
        if held is not None:  # a backend's own cache (replay) is free, as ours is
            reply = done.text if done is not None else None
            charged, cost = run.ledger.settle(held, Usage() if cached else usage, reply)
            tally.charged_tokens += charged.total_tokens
            tally.charged_cost += cost
            if done is not None and not cached:
                true_cost = cost  # charged what it used (or the reservation standing for it)
            if usage is None and done is not None:
                usage = charged  # unknown: the reservation stands for it
        first = tally.first if tally.first is not None else now
        elapsed = now - first
        rec = TraceRecord(
            node=node.name,
            model=node.model,
            backend=backend.id,
            request=request,
            output=done.text if done is not None else None,
            started_s=first - run.t0,
            latency_s=done.latency_s if cached and done is not None else elapsed,
            queued_s=tally.queued,
            attempts=tally.count,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cost=true_cost
            if true_cost is not None
            else backend.price.cost(usage.prompt_tokens, usage.completion_tokens)
            if usage
            else 0.0,
            cached=cached,
            finish_reason=done.finish_reason if done is not None else None,
            error=error
            if isinstance(error, str) or error is None
            else f"{type(error).__name__}: {error}",
            elapsed_s=elapsed,
            charged_tokens=tally.charged_tokens,
            charged_cost=tally.charged_cost,
            usage_known=known,
        )
        self.records.append(rec)
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
        order: Sequence[str],
        output: str,
        question: str,
        task: TaskKind,
        cache: CallCache | None,
        budget: Budget | None,
        choices: tuple[str, ...] | None = None,
    ) -> None:
        self.nodes = nodes
        self.order = order
        self.output = output
        self.question = question
        self.task = task
        self.choices = choices
        self.cache = cache
        self.ledger = Ledger(budget)
        self.follow_routes = True
        self.loop = asyncio.get_running_loop()
        self.model_nodes_left = sum(1 for n in nodes.values() if n.backend is not None)
        # Every backend reaches its slot pool before any call, so backends sharing a
        # resource settle its capacity (the smallest) first; the run holds its pools.
        self.pools = {n.backend.resource: slot_pool(n.backend) for n in nodes.values() if n.backend}

        # Per identical call: [lowest index not known to be taken, indices taken].
        self.samples: dict[Hashable, _Taken] = {}
        self.watchdog = _Watchdog(self.loop)
        # The loop's clock, so that tests which fast-forward it (looptime) see consistent
        # times; on a real loop it is time.monotonic().
        self.clock = self.loop.time
        self.t0 = self.clock()
        self.trace: list[TraceRecord] = []
        self.results: dict[str, NodeResult] = {}
        self.pending = {name: len(n.preds) for name, n in nodes.items()}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.started: dict[str, float] = {}
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.closed = False  # the run has returned: tasks it abandoned change nothing

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

    def start(self, name: str) -> None:
        if name not in self.tasks:
            self.tasks[name] = self.loop.create_task(self._drive(name))

    async def _drive(self, name: str | None) -> None:
        # A finished node's first ready successor runs on in the same task: no new task
        # and no extra trip through the event loop for the common step along a chain.
        try:
            while name is not None:
                name = await self._node(name)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug in the executor itself: fail the run loudly
            if not self.done.done():
                self.done.set_exception(exc)
            raise

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
        started = self.clock()
        self.started[name] = started
        calls = _NodeCalls(self, node)
        inputs = [self._input(p, name) for p in node.preds]
        if node.join_any:
            self._drop_losers()
        task = asyncio.current_task()
        assert task is not None
        try:
            msg = await self._message(node, calls.context(), inputs, task)
        except asyncio.CancelledError:
            if name not in self.results:  # the run is being cut
                raise
            # This node lost a race and is already recorded: the task ends here.
            if task.uncancel() > 0:
                raise
            return None
        if self.closed:
            return None
        return self.finish(node, msg, started, calls.records)

    async def _message(
        self,
        node: CompiledNode,
        ctx: NodeContext,
        inputs: list[Message],
        task: asyncio.Task[None],
    ) -> Message:
        if inputs and not any(m.ok for m in inputs):
            if all(m.skipped for m in inputs):
                return Message(node.name, node.spec.role, skipped=True)
            failed = [m.node for m in inputs if m.error is not None]
            return Message(node.name, node.spec.role, error=UpstreamFailed(node.name, failed))
        node_s = node.timeout.node_s
        role = node.role
        try:
            if node_s is None:
                msg = await role.run(ctx, inputs)
            else:
                async with asyncio.timeout(node_s) as scope:
                    msg = await role.run(ctx, inputs)
        except asyncio.CancelledError:
            if task.cancelling():
                raise  # this node or the run is being cancelled
            error: BaseException = RuntimeError(
                f"role {node.spec.role!r} of node {node.name!r} raised CancelledError "
                "without being cancelled"
            )
        except Exception as exc:
            error = exc
            if isinstance(exc, TimeoutError) and node_s is not None and scope.expired():
                message = f"node {node.name!r} timed out after {node_s:g}s"
                error = NodeTimeout(message, node=node.name)
        else:
            if isinstance(msg, Message):
                return msg
            error = TypeError(
                f"role {node.spec.role!r} ({type(role).__name__}) of node {node.name!r} "
                f"returned {type(msg).__name__}, not a Message"
            )
        return Message(node.name, node.spec.role, error=error)

    def finish(
        self, node: CompiledNode, msg: Message, started: float, calls: Sequence[TraceRecord]
    ) -> str | None:
        """Record the node's result and start the successors it made ready; the first of
        them is returned to run on in this node's task."""
        self.record(node, msg, started, calls)
        pending, tasks = self.pending, self.tasks
        inline = None
        for succ in node.succs:
            pending[succ] -= 1
            if succ in tasks or succ in self.results:
                continue
            if not pending[succ] or (self.nodes[succ].join_any and self._input(node.name, succ).ok):
                if inline is None:
                    inline = succ
                    tasks[succ] = tasks[node.name]
                else:
                    self.start(succ)
        return inline

    def record(
        self, node: CompiledNode, msg: Message, started: float, calls: Sequence[TraceRecord]
    ) -> None:
        t0 = self.t0
        self.results[node.name] = NodeResult(
            node.name,
            node.spec.role,
            node.model,
            node.preds,
            msg,
            started - t0,
            self.clock() - t0,
            tuple(calls),
        )
        if node.backend is not None:
            self.model_nodes_left -= 1
        if len(self.results) == len(self.nodes) and not self.done.done():
            self.done.set_result(None)

    def _drop_losers(self) -> None:
        """An "any" join has started. Every unfinished node whose successors have all
        started (or are dropped too) can no longer change the answer: it lost the race.
        Record it as skipped now and cancel its task (hedged requests)."""
        dropped: set[str] = set()
        for name in reversed(self.order):
            if name in self.results or name == self.output:
                continue
            node = self.nodes[name]
            if all(s in self.started or s in dropped for s in node.succs):
                dropped.add(name)
        for name in self.order:  # inputs first, as if they had finished in that order
            if name not in dropped:
                continue
            node = self.nodes[name]
            running = name in self.started
            msg = Message(name, node.spec.role, skipped=True, lost_race=True)
            self.record(node, msg, self.started.get(name, self.clock()), ())
            task = self.tasks.get(name)
            if running and task is not None and not task.done():
                task.cancel()

    async def abort(self, reason: BaseException | None) -> None:
        """Cancel unfinished nodes (waiting at most ``ABANDON_AFTER_S`` for roles that
        ignore cancellation); with a ``reason`` record them as failed with it."""
        live = [t for t in set(self.tasks.values()) if not t.done()]
        for task in live:
            task.cancel()
        if live:
            await asyncio.wait(live, timeout=ABANDON_AFTER_S)
        self.closed = True
        if reason is None:
            return
        for name, node in self.nodes.items():
            if name not in self.results:
                started = self.started.get(name, self.clock())
                self.record(node, Message(name, node.spec.role, error=reason), started, ())


async def execute(
    nodes: Mapping[str, CompiledNode],
    order: Sequence[str],
    output: str,
    question: str,
    *,
    task: TaskKind = "text",
    choices: tuple[str, ...] | None = None,
    timeout_s: float | None = None,
    cache: CallCache | None = None,
    budget: Budget | None = None,
    follow_routes: bool = True,
    opening: Awaitable[None] | None = None,
) -> RunResult:
    """Run the compiled graph on ``question``. ``opening`` (loading or connecting the
    backends) is awaited first, inside the run's time limit."""
    run = _Run(nodes, order, output, question, task, cache, budget, choices)
    run.follow_routes = follow_routes
    latency_s = budget.latency_s if budget is not None else None
    limit = min((t for t in (timeout_s, latency_s) if t is not None), default=None)
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            if opening is not None:
                await opening
            for name in order:
                if not nodes[name].preds:
                    run.start(name)
            await run.done
    except TimeoutError:
        if not scope.expired():
            await run.abort(None)
            raise
        assert limit is not None
        reason: Exception
        if limit == latency_s:
            spent = run.clock() - run.t0
            reason = BudgetExceeded("latency", spent=spent, limit=limit, node=output)
        else:
            reason = NodeTimeout(f"run time limit of {limit:g}s reached", node=output)
        await run.abort(reason)
    except BaseException:
        await run.abort(None)
        raise
    finally:
        run.closed = True
        run.watchdog.close()
    ordered = {name: run.results[name] for name in order}
    trace = Trace(tuple(run.trace))
    wall = run.clock() - run.t0
    return RunResult(question, output, ordered, trace, wall, run.ledger.overrun)
