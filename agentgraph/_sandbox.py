"""Run model-generated Python in a contained child process, and score code answers.

:func:`arun_python` starts ``python -I -c _BOOTSTRAP`` in a new session. The bootstrap
sets the sandbox up in the child itself, then runs the program in that same process
(no ``preexec_fn``: the parent has threads, llama.cpp runs on one, and code between fork
and exec in a threaded parent can deadlock). The process tree, on Linux::

    outer    bootstrap, the caller's uid and PID namespace; waits for init
    └ init   PID 1 of a new PID namespace; reaps orphans; when it ends, the kernel kills
      │      every process left in the namespace, wherever they moved (setsid, daemons)
      └ program  unprivileged, resource limits, runs ``main.py`` like ``python main.py``

What holds:

- **Time**: ``RLIMIT_CPU`` per process (SIGXCPU, SIGKILL a second later); a wall-clock
  limit kills the process group (outer and init: the program cannot leave it, as it is
  their child), which ends the namespace. After a normal end init exits with the
  program and takes every leftover with it. :func:`arun_python` returns once they are gone.
- **Memory, processes, files**: ``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``,
  ``RLIMIT_NOFILE``, ``RLIMIT_CORE`` 0 (see :class:`SandboxLimits`).
- **Privileges**: as root, the program drops to ``uid``/``gid`` (nobody), without
  supplementary groups or capabilities, with ``no_new_privs`` (setuid binaries give
  nothing back). Root ignores ``RLIMIT_NPROC`` and file permissions: this drop is what
  makes them hold. ``RLIMIT_NPROC`` counts all processes of that uid, so concurrent
  sandboxes share one budget. An interpreter under a directory nobody may enter
  (``/root/.pyenv``) is reached in a new mount namespace, where that directory is covered
  by a tmpfs with only the interpreter's prefixes bound back (hiding the rest).
- **Network**: a new network namespace holds only a loopback device, down: ``connect``
  fails at once (ENETUNREACH), to servers on the host's 127.0.0.1 too.
- **Secrets**: the environment is ``PATH``, ``LANG``, ``LC_ALL``, ``TMPDIR`` (the work
  directory), no ``HOME``; ``-I`` ignores ``PYTHON*`` and user site-packages; ``/proc`` is
  the new PID namespace's, so host processes (command lines, environments) are unseen.
- **Files**: a fresh work directory, removed afterwards; elsewhere, nobody's rights.
- **Output**: a head and a tail are kept; past ``output_limit_bytes`` the group is killed.

Weaker modes, reported rather than silent:

- **Not root**: the program keeps the caller's uid, with its files (home directory,
  credentials) readable and writable. Where unprivileged user namespaces are allowed
  (most distributions) one makes the network, PID and mount namespaces possible, so
  everything else above holds; the program gets no capabilities.
- **No namespaces** (user namespaces off, a container without CAP_SYS_ADMIN):
  ``SandboxResult.network_isolated`` is False and the program has the caller's network
  (loopback services, the internet if reachable). init is then a child subreaper that
  kills leftover descendants after a normal end, but on a wall-clock kill processes that
  left the process group can survive. As root without a mount namespace, an interpreter
  nobody can read raises :class:`SandboxError`.
- **Never contained**: disk use over many files (each is capped; files left in ``/tmp``
  or ``/dev/shm`` outside the work directory stay), reading world-readable files.

Elsewhere than Linux, :func:`arun_python` raises :class:`SandboxError`. :func:`ascore_code`
scores a code answer: the program of :func:`code_program` passes when it exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, cast

from ._errors import SandboxError, TaskError
from ._tasks import Scored, Task

__all__ = [
    "DEFAULT_LIMITS",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "arun_python",
    "ascore_code",
    "code_program",
    "extract_code",
]


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one run; the defaults fit test programs (HumanEval, MBPP) with margin.

    - ``wall_time_s``: the whole run, interpreter start (about 50 ms) included.
    - ``cpu_time_s``: CPU seconds per process (``RLIMIT_CPU``); 3, as in HumanEval's own
      harness: every reference solution but one (mbpp/123, 6 s) takes under 0.6 s.
    - ``memory_bytes``: address space per process (``RLIMIT_AS``), 40 MB for Python itself.
    - ``max_processes``: processes and threads of the unprivileged uid (``RLIMIT_NPROC``);
      16 leaves room for thread pools and bounds memory at 16 x ``memory_bytes``.
    - ``file_size_bytes``, ``open_files``: ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``.
    - ``output_keep_bytes``, ``output_limit_bytes``: kept of each of stdout and stderr
      (a quarter head, the rest tail), and written to one before the run is killed.
    - ``uid``, ``gid``: who the program runs as when the caller is root (nobody).
    """

    wall_time_s: float = 10.0
    cpu_time_s: int = 3
    memory_bytes: int = 1 << 30
    max_processes: int = 16
    file_size_bytes: int = 16 << 20
    open_files: int = 64
    output_keep_bytes: int = 64 << 10
    output_limit_bytes: int = 4 << 20
    uid: int = 65534
    gid: int = 65534

    def __post_init__(self) -> None:
        sizes = (self.memory_bytes, self.max_processes, self.file_size_bytes)
        if not self.wall_time_s > 0 or self.cpu_time_s < 1 or min(sizes) < 1:
            raise ValueError("sandbox limits must be positive (cpu_time_s: whole seconds)")
        if self.open_files <= 3 or not 0 < self.output_keep_bytes <= self.output_limit_bytes:
            raise ValueError("open_files must be > 3, and 0 < output_keep <= output_limit")


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """How a run ended. ``returncode`` is negative for a signal (-9: SIGKILL).
    ``killed_by`` names the limit that stopped it: "wall-clock timeout", "cpu time",
    "memory", "file size", "process limit", "output flood", or "signal SIGSEGV" and the
    like; None when it ended by itself. ``network_isolated``: it ran without a network."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    killed_by: str | None
    network_isolated: bool
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_by is None and not self.timed_out


# `python -I -c _BOOTSTRAP <config>`. main() returns only in the program's process, which
# then runs main.py as `python main.py` would (tracebacks, exit codes, atexit, threads).
_BOOTSTRAP = r"""
import ctypes, json, os, resource, runpy, signal, sys
C = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
NOSUID, NODEV, NOEXEC, BIND, REC, PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18

def report(**kw):
    os.write(C["status_fd"], json.dumps(kw).encode() + b"\n")

def check(rc, what):
    if rc != 0:
        raise OSError(ctypes.get_errno(), what)

def prctl(option, arg):
    check(libc.prctl(option, ctypes.c_ulong(arg), *[ctypes.c_ulong(0)] * 3), "prctl")

def mount(src, dst, fstype, flags, data=None):
    b = lambda s: None if s is None else s.encode()
    check(libc.mount(b(src), b(dst), b(fstype), flags, b(data)), f"mount on {dst}")

def namespaces():
    os.umask(0o022)
    uid, gid, got = os.getuid(), os.getgid(), {}
    if uid != 0:  # unprivileged: the other namespaces need a user namespace
        got["user"] = libc.unshare(0x10000000) == 0
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")) * got["user"]:
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    for name, flag in (("net", 0x40000000), ("pid", 0x20000000), ("mnt", 0x20000)):
        got[name] = libc.unshare(flag) == 0
    if got["mnt"]:
        mount(None, "/", None, REC | PRIVATE)  # nothing propagates to the host
        for top, dirs in C["expose"]:
            fds = [os.open(d, os.O_PATH | os.O_DIRECTORY) for d in dirs]
            mount("tmpfs", top, "tmpfs", NOSUID | NODEV, "mode=0755,size=1m")
            for d, fd in zip(dirs, fds):
                os.makedirs(d, exist_ok=True)
                mount(f"/proc/self/fd/{fd}", d, None, BIND | REC)
                os.close(fd)
    return got

def sweep():  # no PID namespace: kill what was re-parented to init, until none is left
    me = str(os.getpid())
    while True:
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{p}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        os.kill(int(p), signal.SIGKILL)
            except (OSError, IndexError):
                pass
        try:
            os.wait()
        except ChildProcessError:
            return

def drop(got):
    if C["uid"] is not None:  # root: every capability goes with the uid
        os.setgroups([])
        os.setgid(C["gid"])
        os.setuid(C["uid"])
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (setuid clears it)
    prctl(38, 1)  # PR_SET_NO_NEW_PRIVS
    prctl(4, 1)  # PR_SET_DUMPABLE: its /proc/self is its own again
    if got.get("user"):  # none of the user namespace's capabilities either
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        check(libc.capset(hdr, (ctypes.c_uint32 * 6)()), "capset")
    for res, soft, hard in C["rlimits"]:
        top = resource.getrlimit(res)[1]
        fit = lambda v: v if top == resource.RLIM_INFINITY else min(v, top)
        resource.setrlimit(res, (fit(soft), fit(hard)))
    for d in C["verify"]:
        if not os.access(d, os.R_OK | os.X_OK):
            raise OSError(f"the sandbox's user cannot read {d}; run it as root with "
                          "mount namespaces, or from an interpreter that user can read")

def main():
    try:
        got = namespaces()
    except OSError as e:
        report(error=f"sandbox setup failed: {e}")
        os._exit(125)
    report(**got)
    init = os.fork()
    if init:  # outer: init's end is the namespace's end
        report(init=init)
        os.waitpid(init, 0)
        os._exit(0)
    prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive outer
    prctl(4, 0)  # PR_SET_DUMPABLE: the program cannot ptrace init
    if got["pid"] and got["mnt"]:
        try:
            mount("proc", "/proc", "proc", NOSUID | NODEV | NOEXEC)
        except OSError:
            pass  # the host's /proc stays visible
    if not got["pid"]:
        prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans come back to init
    program = os.fork()
    if program:
        while (waited := os.wait4(-1, 0))[0] != program:
            pass
        report(status=waited[1], cpu=waited[2].ru_utime + waited[2].ru_stime)
        if not got["pid"]:
            sweep()
        os._exit(0)
    try:
        drop(got)
    except OSError as e:
        report(error=f"sandbox setup failed: {e}")
        os._exit(125)
    os.close(C["status_fd"])
    return C["main"]

sys.argv[:] = [main()]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


async def arun_python(code: str, *, limits: SandboxLimits = DEFAULT_LIMITS) -> SandboxResult:
    """Run ``code`` as ``main.py`` in the sandbox (see the module docstring) and return
    how it ended, once every process of the run is gone. Never raises for what the
    program does; :class:`SandboxError` when the sandbox cannot be set up here."""
    if sys.platform != "linux":
        raise SandboxError(f"the code sandbox needs Linux (namespaces, prctl), not {sys.platform}")
    import resource

    root = os.geteuid() == 0
    n = limits
    workdir = tempfile.mkdtemp(prefix="agentgraph-sandbox-")  # small, synchronous
    try:
        main = os.path.join(workdir, "main.py")
        with open(main, "w", encoding="utf-8", errors="replace") as f:  # lone surrogates
            f.write(code)
        prefixes = sorted({sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix})
        if root:
            os.chown(workdir, n.uid, n.gid)
        config = {
            "main": main,
            "uid": n.uid if root else None,
            "gid": n.gid if root else None,
            "expose": _expose_plan([*prefixes, workdir], n.uid, n.gid) if root else [],
            "verify": prefixes if root else [],
            "rlimits": [
                (resource.RLIMIT_CPU, n.cpu_time_s, n.cpu_time_s + 1),  # SIGXCPU, then KILL
                (resource.RLIMIT_AS, n.memory_bytes, n.memory_bytes),
                (resource.RLIMIT_NPROC, n.max_processes, n.max_processes),
                (resource.RLIMIT_FSIZE, n.file_size_bytes, n.file_size_bytes),
                (resource.RLIMIT_NOFILE, n.open_files, n.open_files),
                (resource.RLIMIT_CORE, 0, 0),
            ],
        }
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        return await _run(config, workdir, {**env, "TMPDIR": workdir}, limits)
    finally:
        _remove_tree(workdir)


async def _run(
    config: dict[str, Any], workdir: str, env: dict[str, str], limits: SandboxLimits
) -> SandboxResult:
    loop = asyncio.get_running_loop()
    proto = _Collector(loop, limits)
    status_r, status_w = os.pipe()  # the bootstrap's reports; closed before the program
    config = {**config, "status_fd": status_w}
    try:
        # loop.subprocess_exec is what create_subprocess_exec wraps; our own protocol caps
        # output as it arrives, and owning the transport lets us close it even when a
        # leftover process holds a pipe open.
        transport, _ = await loop.subprocess_exec(
            lambda: proto,
            *(sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(config)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,  # one process group: outer and init
            pass_fds=(status_w,),
        )
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    reports, timed_out, started = _Reports(status_r), False, loop.time()
    try:
        done, _ = await asyncio.wait({proto.exited}, timeout=limits.wall_time_s)
        if not done:
            timed_out = True
            _killpg(proto.pid)
            await proto.exited
        elapsed = loop.time() - started
        await asyncio.wait({proto.closed}, timeout=1.0)  # output still in the pipes
    finally:
        if transport.get_returncode() is None:  # cancelled: the group id is still ours
            _killpg(proto.pid)
        transport.close()
        for _ in range(1000):  # a killed outer does not wait for init, and so the namespace
            if not _alive(reports.poll().get("init")):
                break
            await asyncio.sleep(0.01)
        report = reports.close()
    if "error" in report:
        raise SandboxError(str(report["error"]))
    if "status" in report:
        returncode = os.waitstatus_to_exitcode(int(report["status"]))
    else:  # killed before the program ended
        returncode = transport.get_returncode() or -signal.SIGKILL
    stdout, stderr = (proto.streams[fd].text() for fd in (1, 2))
    cpu_s = float(report.get("cpu", 0.0))
    why = _killed_by(returncode, stderr, cpu_s, limits, timed_out, proto.flooded)
    isolated = bool(report.get("net", False))
    return SandboxResult(returncode, stdout, stderr, timed_out, why, isolated, elapsed)


class _Capped:
    """One output stream: its first quarter and last three quarters of ``keep`` bytes."""

    def __init__(self, keep: int) -> None:
        self.head_cap, self.tail_cap = keep // 4, keep - keep // 4
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = max(0, self.head_cap - len(self.head))
        self.head += data[:room]
        self.tail += data[room:]
        del self.tail[: max(0, len(self.tail) - self.tail_cap)]

    def text(self) -> str:
        omitted = self.total - len(self.head) - len(self.tail)
        middle = f"\n[... {omitted} bytes omitted ...]\n" if omitted else ""
        return self.head.decode(errors="replace") + middle + self.tail.decode(errors="replace")


class _Collector(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, limits: SandboxLimits) -> None:
        keep = limits.output_keep_bytes
        self.streams, self.limit = {1: _Capped(keep), 2: _Capped(keep)}, limits.output_limit_bytes
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.flooded, self.pid = False, cast("int | None", None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.pid = transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        stream = self.streams[fd]
        stream.add(bytes(data))
        if stream.total > self.limit and not self.flooded:
            self.flooded = True
            _killpg(self.pid)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _killpg(pid: int | None) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
        os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]  # None: not started


class _Reports:
    """The bootstrap's JSON lines, merged, read without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer, self.merged = fd, b"", dict[str, Any]()
        os.set_blocking(fd, False)

    def poll(self) -> dict[str, Any]:
        try:
            while chunk := os.read(self.fd, 1 << 16):
                self.buffer += chunk
        except BlockingIOError:
            pass
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.merged.update(json.loads(line))
        return self.merged

    def close(self) -> dict[str, Any]:
        self.poll()
        os.close(self.fd)
        return self.merged


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` still runs. A zombie has finished (init becomes one only once its
    namespace is empty); pids are allocated in a cycle, so not yet someone else's."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


_LAST_LINE_LIMITS = (  # how a Python program reports a limit it ran into
    ("MemoryError", "memory"),
    ("OSError: [Errno 27]", "file size"),  # EFBIG: Python ignores SIGXFSZ
    ("BlockingIOError: [Errno 11]", "process limit"),  # fork() under RLIMIT_NPROC
    ("RuntimeError: can't start new thread", "process limit"),
)


def _killed_by(
    returncode: int, stderr: str, cpu_s: float, n: SandboxLimits, timed_out: bool, flood: bool
) -> str | None:
    if flood or timed_out:
        return "output flood" if flood else "wall-clock timeout"
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= n.cpu_time_s):
            return "cpu time"
        if sig == signal.SIGXFSZ:
            return "file size"
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    last = _last_lines(stderr, 1) if returncode else ""
    return next((why for start, why in _LAST_LINE_LIMITS if last.startswith(start)), None)


def _expose_plan(paths: list[str], uid: int, gid: int) -> list[tuple[str, list[str]]]:
    """For each topmost directory ``uid`` may not enter on the way to one of ``paths``,
    the paths under it: the bootstrap covers it with a tmpfs and binds them back."""
    wanted = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    wanted = [p for p in wanted if not any(p.startswith(q + os.sep) for q in wanted)]
    plan: dict[str, list[str]] = {}
    for path in wanted:
        parts = path.split(os.sep)
        for i in range(2, len(parts)):
            top = os.sep.join(parts[:i])
            st = os.stat(top)
            bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
            if not st.st_mode & bit:
                plan.setdefault(top, []).append(path)
                break
    return list(plan.items())


def _remove_tree(path: str) -> None:
    """Remove the work directory, also where the program took its permissions away."""
    for dirpath, dirs, _ in os.walk(path):
        for d in dirs:
            if not os.path.islink(full := os.path.join(dirpath, d)):
                os.chmod(full, 0o700)  # before os.walk goes in
    shutil.rmtree(path, ignore_errors=True)


# Scoring ------------------------------------------------------------------------------

_FENCE = re.compile(
    r"^([ \t]*)```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.M | re.S
)


def extract_code(answer_text: str) -> str:
    """The code of an answer: its last ```python fenced block, else its last fenced block,
    else the whole text. A fence left open (a cut-off answer) runs to the end; a fence's
    own indentation is removed from its lines."""
    blocks = [(m[1], m[2].lower(), m[3]) for m in _FENCE.finditer(answer_text)]
    chosen = [b for b in blocks if b[1] in ("python", "python3", "py")] or blocks
    if not chosen:
        return answer_text
    indent, _, body = chosen[-1]
    return re.sub(rf"^[ \t]{{0,{len(indent)}}}", "", body, flags=re.M) if indent else body


def code_program(task: Task, answer_text: str) -> str:
    """The program that tests an answer to a code task: the answer's code (see
    :func:`extract_code`), then ``task.tests``, then ``check(entry_point)`` when the tests
    define ``check`` without calling it (HumanEval); asserts (MBPP) run as they are.

    When the question is itself code defining ``task.entry_point`` (a HumanEval prompt),
    the program starts with the question:

    - an answer that does not define ``entry_point`` is a completion (the function's
      body) and continues the question directly; a body given without its indentation is
      indented when only that makes it compile;
    - an answer that defines ``entry_point`` redefines it after the question, so the
      prompt's imports and helper functions stay available to it.
    """
    if task.tests is None:
        raise TaskError("a code task needs tests", source=task.id, field="tests")
    parts, code, entry = [], extract_code(answer_text), task.entry_point
    if entry and _defines(task.question, entry):
        question = task.question if task.question.endswith("\n") else task.question + "\n"
        if _defines(code, entry):
            parts += [question, code]
        else:
            indented = re.sub(r"^(?=.)", "    ", code, flags=re.M)
            if not _compiles(question + code) and _compiles(question + indented):
                code = indented
            parts.append(question + code)
    else:
        parts.append(code)
    parts.append(task.tests)
    if entry and re.search(r"^def[ \t]+check\b", task.tests, re.M) and not _CALLS_CHECK(task.tests):
        parts.append(f"check({entry})")
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"


_CALLS_CHECK = re.compile(r"^check[ \t]*\(", re.M).search


def _defines(code: str, name: str) -> bool:
    n = re.escape(name)
    pattern = rf"^(?:(?:async[ \t]+)?def[ \t]+{n}[ \t]*\(|class[ \t]+{n}\b|{n}[ \t]*=)"
    return re.search(pattern, code, re.M) is not None


def _compiles(source: str) -> bool:
    try:
        compile(source, "<answer>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


async def ascore_code(
    task: Task, answer_text: str, *, limits: SandboxLimits | None = None
) -> Scored:
    """1.0 when the program of :func:`code_program` exits 0 in the sandbox, else 0.0 with
    the reason: the limit that stopped it, or the last lines of its stderr."""
    code = extract_code(answer_text)
    if not code.strip():
        return Scored(0.0, None, "no code in the answer")
    result = await arun_python(code_program(task, answer_text), limits=limits or DEFAULT_LIMITS)
    if result.ok:
        return Scored(1.0, code)
    if result.killed_by in ("wall-clock timeout", "output flood", "cpu time"):
        return Scored(0.0, code, result.killed_by)
    tail = _last_lines(result.stderr, 3)[-300:] or f"exit status {result.returncode}"
    return Scored(0.0, code, f"{result.killed_by}: {tail}" if result.killed_by else tail)


def _last_lines(text: str, n: int) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])
