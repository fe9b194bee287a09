"""The code sandbox against hostile programs, and the pass@1 code scorer.

Each hostile program must be contained with a precise outcome (which limit stopped it,
what it could not do), and leave nothing behind: no process of the sandbox's uid, no
work directory. These tests run as root on Linux in CI (the sandbox drops to nobody)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentgraph._errors import TaskError
from agentgraph._sandbox import (
    DEFAULT_LIMITS,
    SandboxLimits,
    SandboxResult,
    arun_python,
    ascore_code,
    code_program,
    extract_code,
)
from agentgraph._tasks import Task

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

ROOT = os.geteuid() == 0
NOBODY = DEFAULT_LIMITS.uid
needs_root = pytest.mark.skipif(not ROOT, reason="privilege drop is tested as root")
FAST = SandboxLimits(wall_time_s=3.0, cpu_time_s=2)


def _proc_field(pid: str, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _pids() -> Iterator[str]:
    return filter(str.isdigit, os.listdir("/proc"))


def _processes_of(uid: int) -> list[str]:
    """Live processes whose real uid is ``uid`` (zombies excluded)."""
    found = []
    for pid in _pids():
        status = _proc_field(pid, "status") or ""
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and "Z" not in fields["State"]:
            found.append(pid)
    return found


def _named(token: str) -> list[str]:
    """Live processes whose command name (``/proc/PID/comm``) is ``token``."""
    return [p for p in _pids() if (_proc_field(p, "comm") or "").strip() == token]


def _token() -> str:
    return "sbx" + uuid.uuid4().hex[:12]  # comm holds 15 characters


async def run(
    code: str, limits: SandboxLimits = DEFAULT_LIMITS, *, alone: bool = True
) -> SandboxResult:
    result = await arun_python(textwrap.dedent(code), limits=limits)
    if ROOT and alone:  # nothing of the run is left when it returns
        assert _processes_of(NOBODY) == []
    return result


async def test_normal_program_passes() -> None:
    r = await run("import collections, math\nprint(math.factorial(5), 'ok')\n")
    assert r.ok
    assert (r.returncode, r.stdout, r.stderr, r.timed_out, r.killed_by) == (
        0,
        "120 ok\n",
        "",
        False,
        None,
    )
    assert r.network_isolated is True
    assert 0 < r.elapsed_s < DEFAULT_LIMITS.wall_time_s


async def test_exit_status_and_traceback() -> None:
    r = await run("import sys\nsys.exit(3)\n")
    assert (r.returncode, r.killed_by, r.ok) == (3, None, False)
    r = await run("raise ValueError('boom')\n")
    assert r.returncode == 1 and r.killed_by is None
    assert r.stderr.splitlines()[-1] == "ValueError: boom"
    assert 'main.py", line 1, in <module>' in r.stderr


async def test_infinite_loop_is_stopped_by_cpu_time() -> None:
    r = await run("while True:\n    pass\n", SandboxLimits(cpu_time_s=1, wall_time_s=20))
    assert (r.killed_by, r.returncode, r.timed_out) == ("cpu time", -signal.SIGXCPU, False)
    assert r.elapsed_s < 20


async def test_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    r = await run("import time\ntime.sleep(600)\n", SandboxLimits(wall_time_s=2))
    assert (r.killed_by, r.returncode, r.timed_out) == ("wall-clock timeout", -9, True)
    assert r.elapsed_s < 30


async def test_a_program_ignoring_sigxcpu_still_dies_at_the_hard_limit() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    r = await run(code, SandboxLimits(cpu_time_s=1, wall_time_s=20))
    assert (r.killed_by, r.returncode, r.timed_out) == ("cpu time", -signal.SIGKILL, False)


@needs_root
async def test_fork_bomb_is_contained_and_leaves_nothing() -> None:
    bomb = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    started = time.monotonic()
    r = await run(bomb, SandboxLimits(wall_time_s=3, max_processes=16))
    assert (r.killed_by, r.timed_out, r.returncode) == ("wall-clock timeout", True, -9)
    assert _processes_of(NOBODY) == []
    assert time.monotonic() - started < 30
    # The machine stays usable: the next run is an ordinary one.
    after = await run("print('alive')\n")
    assert after.ok and after.stdout == "alive\n"


async def test_fork_count_is_capped_by_the_process_limit() -> None:
    count = """
        import os, time
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(600)
            except OSError as e:
                print(n, e.errno)
                break
            n += 1
    """
    r = await run(count, SandboxLimits(max_processes=8, wall_time_s=20))
    assert r.ok, r.stderr
    forked, errno = map(int, r.stdout.split())
    assert errno == 11  # EAGAIN
    assert forked < 8  # the program itself counts too; the sleepers died with the run


async def test_unhandled_fork_failure_is_reported_as_the_process_limit() -> None:
    r = await run("import os\nwhile True:\n    os.fork()\n", SandboxLimits(max_processes=4))
    assert r.killed_by == "process limit"
    assert "BlockingIOError: [Errno 11]" in r.stderr


@pytest.mark.parametrize(
    "bomb",
    [
        "x = bytearray(64 << 30)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n",
    ],
    ids=["at-once", "gradual"],
)
async def test_memory_bomb_gets_memory_error(bomb: str) -> None:
    r = await run(bomb, SandboxLimits(memory_bytes=512 << 20))
    assert (r.killed_by, r.returncode, r.timed_out) == ("memory", 1, False)
    assert r.stderr.splitlines()[-1].startswith("MemoryError")


async def test_ten_gigabyte_file_is_stopped_at_the_file_size_limit() -> None:
    write = """
        import os
        chunk = b"x" * (1 << 20)
        print(os.getcwd(), flush=True)
        try:
            with open("big", "wb") as f:
                for _ in range(10 * 1024):
                    f.write(chunk)
        except OSError:
            print(os.path.getsize("big"), flush=True)
            raise
    """
    limit = 4 << 20
    r = await run(write, SandboxLimits(file_size_bytes=limit))
    assert r.killed_by == "file size"
    assert r.stderr.splitlines()[-1] == "OSError: [Errno 27] File too large"
    workdir, size = r.stdout.split()
    assert 0 < int(size) <= limit
    assert not os.path.exists(workdir)  # removed with what it held


@needs_root
async def test_files_outside_its_directory_cannot_be_changed() -> None:
    victim_dir = Path(tempfile.mkdtemp(prefix="sandbox-victim-"))
    try:
        victim_dir.chmod(0o755)
        victim = victim_dir / "precious.txt"
        victim.write_text("precious")
        victim.chmod(0o644)
        program = f"""
            import json, os, shutil
            d, f = {str(victim_dir)!r}, {str(victim)!r}
            attempts = {{
                "write": lambda: open(f, "w").write("gone"),
                "append": lambda: open(f, "a").write("more"),
                "delete": lambda: os.remove(f),
                "rename": lambda: os.rename(f, f + ".moved"),
                "chmod": lambda: os.chmod(f, 0o777),
                "create": lambda: open(os.path.join(d, "new.txt"), "w"),
                "rmtree": lambda: shutil.rmtree(d),
                "setuid-root": lambda: os.setuid(0),
                "write /etc": lambda: open("/etc/sandbox-was-here", "w"),
            }}
            outcome = {{}}
            for name, attempt in attempts.items():
                try:
                    attempt()
                    outcome[name] = "done"
                except PermissionError:
                    outcome[name] = "denied"
            print(json.dumps(outcome))
        """
        r = await run(program)
        assert r.ok, r.stderr
        outcome = json.loads(r.stdout)
        assert set(outcome.values()) == {"denied"}, outcome
        assert victim.read_text() == "precious"
        assert stat.S_IMODE(victim.stat().st_mode) == 0o644
        assert sorted(p.name for p in victim_dir.iterdir()) == ["precious.txt"]
        assert not os.path.exists("/etc/sandbox-was-here")
    finally:
        for p in victim_dir.iterdir():
            p.unlink()
        victim_dir.rmdir()


@needs_root
async def test_runs_unprivileged_without_capabilities() -> None:
    program = """
        import os
        status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
        print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(),
              status["CapEff"].strip(), status["CapPrm"].strip(), status["NoNewPrivs"].strip())
        print(sorted(os.listdir("/root")))
    """
    r = await run(program)
    assert r.ok, r.stderr
    ids, root_listing = r.stdout.splitlines()
    assert ids == f"{NOBODY} {NOBODY} {NOBODY} [] 0000000000000000 0000000000000000 1"
    assert root_listing == "['.pyenv']" or "/root/" not in sys.base_prefix


async def test_secrets_in_the_environment_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-" + uuid.uuid4().hex
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    program = f"""
        import json, os
        leaked = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for name in ("environ", "cmdline"):
                try:
                    if {secret!r} in open(f"/proc/{{pid}}/{{name}}", errors="replace").read():
                        leaked.append((pid, name))
                except OSError:
                    pass
        try:
            open("/proc/{os.getpid()}/environ").read()
            parent = "readable"
        except OSError as e:
            parent = type(e).__name__
        print(json.dumps({{"env": dict(os.environ), "leaked": leaked, "parent": parent}}))
    """
    r = await run(program)
    assert r.ok, r.stderr
    seen = json.loads(r.stdout)
    assert set(seen["env"]) == {"PATH", "LANG", "LC_ALL", "TMPDIR"}
    assert seen["leaked"] == []
    assert seen["parent"] != "readable"  # the test process is not even visible
    assert secret not in r.stdout + r.stderr


async def test_network_is_unreachable_even_on_loopback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        program = f"""
            import socket
            socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"leak")
        """
        r = await run(program)
        assert r.network_isolated is True
        assert r.returncode == 1 and r.killed_by is None
        assert r.stderr.splitlines()[-1] == "OSError: [Errno 101] Network is unreachable"
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody came


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_output_flood_is_killed_and_capped(stream: str) -> None:
    flood = f"import sys\nwhile True:\n    sys.{stream}.write('x' * 65536)\n"
    limits = SandboxLimits(output_keep_bytes=16 << 10, output_limit_bytes=1 << 20)
    r = await run(flood, limits)
    assert (r.killed_by, r.returncode, r.timed_out) == ("output flood", -9, False)
    kept = getattr(r, stream)
    assert kept.startswith("x" * 100) and kept.endswith("x" * 100)
    assert "bytes omitted ...]" in kept
    assert len(kept) < (16 << 10) + 100


async def test_long_output_keeps_head_and_tail() -> None:
    program = "print('FIRST')\nfor i in range(20000):\n    print('line', i)\nprint('LAST')\n"
    r = await run(program, SandboxLimits(output_keep_bytes=8 << 10))
    assert r.ok
    assert r.stdout.startswith("FIRST\nline 0\n") and r.stdout.endswith("line 19999\nLAST\n")
    assert "bytes omitted ...]" in r.stdout and len(r.stdout) < (8 << 10) + 100


async def test_double_forked_daemon_dies_with_the_run() -> None:
    token = _token()
    program = f"""
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open("/proc/self/comm", "w").write({token!r})
                os.close(1)
                os.close(2)
                time.sleep(600)
            os._exit(0)
        time.sleep(0.5)  # the daemon is up
        print("parent done")
    """
    r = await run(program)
    assert r.ok and r.stdout == "parent done\n", r.stderr
    assert _named(token) == []


async def test_daemon_dies_when_the_run_times_out() -> None:
    token = _token()
    program = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                open("/proc/self/comm", "w").write({token!r})
                time.sleep(600)
            os._exit(0)
        time.sleep(600)
    """
    r = await run(program, FAST)
    assert r.timed_out and r.killed_by == "wall-clock timeout"
    assert _named(token) == []


async def test_cancelling_the_run_kills_it() -> None:
    token = _token()
    program = f"open('/proc/self/comm', 'w').write({token!r})\nimport time\ntime.sleep(600)\n"
    task = asyncio.create_task(arun_python(program))
    for _ in range(500):
        await asyncio.sleep(0.01)
        if _named(token):
            break
    assert _named(token)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _named(token) == []
    if ROOT:
        assert _processes_of(NOBODY) == []


async def test_runs_in_parallel_without_blocking_the_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    tick = asyncio.create_task(ticker())
    started = time.monotonic()
    sleep = "import time\ntime.sleep(1)\n"
    results = await asyncio.gather(*(run(sleep, alone=False) for _ in range(4)))
    elapsed = time.monotonic() - started
    tick.cancel()
    assert all(r.ok for r in results)
    if ROOT:
        assert _processes_of(NOBODY) == []
    assert elapsed < 3.5  # four one-second sleeps side by side, not one after another
    assert ticks >= 10  # the event loop kept running


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        SandboxLimits(wall_time_s=0)
    with pytest.raises(ValueError, match="output_keep"):
        SandboxLimits(output_keep_bytes=10, output_limit_bytes=5)


# Extraction and programs --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
        ("```py\na = 1\n```\nthen\n```python\nb = 2\n```\n", "b = 2\n"),
        ("```python\na = 1\n```\n```text\nnot code\n```\n", "a = 1\n"),
        ("```\nx = 3\n```", "x = 3\n"),
        ("```js\nlet a\n```\n```\nx = 4\n```", "x = 4\n"),
        ("def g():\n    return 2\n", "def g():\n    return 2\n"),
        ("Cut off:\n```python\ndef h():\n    return", "def h():\n    return"),
        (
            "1. Step:\n   ```python\n   def k():\n       return 5\n   ```\n",
            "def k():\n    return 5\n",
        ),
    ],
    ids=[
        "python",
        "last-python",
        "python-over-other",
        "bare",
        "last-any",
        "none",
        "open",
        "indented",
    ],
)
def test_extract_code(text: str, code: str) -> None:
    assert extract_code(text) == code


HE_PROMPT = 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n'
HE_TESTS = (
    "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"
)
HUMANEVAL = Task("he/0", HE_PROMPT, tests=HE_TESTS, entry_point="total")
MBPP = Task(
    "mbpp/0",
    "Write a function add(a, b).\nYour code should pass this test:\nassert add(1, 2) == 3",
    tests="assert add(1, 2) == 3\nassert add(-1, 1) == 0\n",
    entry_point="add",
)


def test_code_program_humaneval_completion_and_full_answers() -> None:
    body = "    return sum(xs)\n"
    assert code_program(HUMANEVAL, body) == f"{HE_PROMPT}{body}\n{HE_TESTS}\ncheck(total)\n"
    full = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"
    program = code_program(HUMANEVAL, full)
    assert program.startswith(HE_PROMPT + "\ndef total(xs: List[int]) -> int:\n    return")
    assert program.endswith("check(total)\n")
    unindented = code_program(HUMANEVAL, "return sum(xs)")
    assert f"{HE_PROMPT}    return sum(xs)\n" in unindented
    # Tests that call check themselves are not called twice; asserts run as they are.
    called = Task("he/1", HE_PROMPT, tests=HE_TESTS + "\ncheck(total)\n", entry_point="total")
    assert code_program(called, body).count("check(total)") == 1
    assert code_program(MBPP, "def add(a, b):\n    return a + b\n") == (
        "def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
    )
    with pytest.raises(TaskError, match="tests"):
        code_program(Task("t", "q"), "x = 1")


async def test_ascore_code_passes_humaneval_forms() -> None:
    for answer in (
        "    return sum(xs)\n",  # a completion of the prompt
        "return sum(xs)",  # a completion that lost its indentation
        "Sure!\n```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```\n",
    ):
        scored = await ascore_code(HUMANEVAL, answer)
        assert (scored.score, scored.reason) == (1.0, None), (answer, scored)
        assert scored.extracted is not None and "sum(xs)" in scored.extracted


async def test_ascore_code_mbpp_pass_and_fail_with_reason() -> None:
    good = await ascore_code(MBPP, "```python\ndef add(a, b):\n    return a + b\n```")
    assert (good.score, good.extracted, good.reason) == (
        1.0,
        "def add(a, b):\n    return a + b\n",
        None,
    )
    bad = await ascore_code(MBPP, "```python\ndef add(a, b):\n    return a - b\n```")
    assert bad.score == 0.0 and bad.extracted == "def add(a, b):\n    return a - b\n"
    assert bad.reason is not None
    assert "assert add(1, 2) == 3" in bad.reason and bad.reason.endswith("AssertionError")
    missing = await ascore_code(MBPP, "```python\ndef plus(a, b):\n    return a + b\n```")
    assert missing.reason is not None
    assert missing.reason.endswith("NameError: name 'add' is not defined")


async def test_ascore_code_reports_limits_and_empty_answers() -> None:
    slow = await ascore_code(MBPP, "def add(a, b):\n    while True:\n        pass\n", limits=FAST)
    assert (slow.score, slow.reason) == (0.0, "cpu time")
    hog = await ascore_code(MBPP, "def add(a, b):\n    return len(bytearray(1 << 40))\n")
    assert hog.score == 0.0 and hog.reason is not None and hog.reason.startswith("memory: ")
    empty = await ascore_code(MBPP, "```python\n```")
    assert (empty.score, empty.extracted, empty.reason) == (0.0, None, "no code in the answer")
