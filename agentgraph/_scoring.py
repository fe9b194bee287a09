r"""Scorers: judge a graph's final answer text against a task's gold answer.

Scorers read the output node's answer as text, so a graph that formats badly scores
badly. They share one way of finding the answer in a reply: the text after the last
"Answer:" / "Final answer:" / "The answer is" / "####" marker (to the end of its line),
or the last ``\boxed{...}``; without either, the whole text.

- ``numeric`` (GSM8K): numbers equal as fractions (no floats): "1,000", "$1000.00",
  "1000.0", "1e3" and "\frac{2000}{2}" all equal 1000; "-5" (or U+2212) is negative, but
  not in "7 - 5"; "50%" equals gold "50" (a unit, as in GSM8K's golds, not a division by
  100). The answer is the last number of the marked answer, cut before an explanation
  ("18 (9 * 2)", "7 because ..."), else the last number of the text.
- ``math`` (MATH-500): equivalence by math-verify (see :func:`score_math`).
- ``choice``: the option letter, or an option named by its text (:func:`match_option`);
  the gold is a letter.
- ``exact``: SQuAD-style normalized equality (:func:`normalize_text`); the answer also
  counts when it is a short sentence (at most 12 words) that contains the normalized gold
  as whole words ("The capital of Japan is Tokyo." for "Tokyo"). That is lenient with
  hedges ("Tokyo or Kyoto"), the price of not failing right answers given in a sentence.
- ``code``: run by ``agentgraph._sandbox.ascore_code``.

How math-verify is called: its own timeouts use ``signal.alarm``, which works only in the
main thread (elsewhere ``parse`` and ``verify`` raise ValueError); in the main thread it
would block the event loop and cancel any alarm of the caller's. A thread with its
timeouts off (``asyncio.to_thread``) cannot be stopped either: a runaway check (sympy
expanding "(x+1)^{2000}" takes seconds, "9^{9^{9^9}}" forever, in C, holding the GIL)
would keep its CPU and starve the event loop. So checks run in a child process, one at a
time, with math-verify's timeouts off; a check past its bound (``timeout_s``, 10 s) scores
0 and the process is killed (the next check starts another, in about a second). Async
callers wait for it on a thread (one, so that cancelled checks leave the queue).
Answers whose arithmetic explodes (towers of powers, exponents of 6+ digits, factorials
of 5+ digits) score 0 unevaluated rather than cost a process and the whole bound.

Remaining math failure cases (math-verify 0.9 disagrees with a human grader):

- repeating decimals: "0.\overline{3}" is not read, so it fails gold "\frac{1}{3}";
- numbers in words: "five" fails gold "5";
- an inequality for an interval: "x < 3" fails gold "(-\infty, 3)";
- "\sqrt{-1}" fails gold "i"; "(1,2)" fails a column vector gold "\begin{pmatrix}1\\2\end{pmatrix}";
- degrees vs radians: "\frac{\pi}{2}" fails gold "90^\circ";
- decimal approximations pass at 6 places: "3.1415927" passes gold "\pi" and "0.3333333"
  passes "\frac{1}{3}", where a grader asking for an exact answer would not accept them;
- percentages are lenient: gold "10\%" accepts "10" and "0.1";
- an explanation after the answer: "Answer: 3 (since 1+2)" fails gold "3".
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import importlib
import importlib.util
import json
import os
import queue
import re
import string
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from ._errors import AgentGraphError, MissingDependency
from ._tasks import LETTERS, Scored, ScorerName, Task

__all__ = [
    "MATH_TIMEOUT_S",
    "answer_segment",
    "ascore",
    "match_option",
    "normalize_text",
    "read_choice",
    "score_choice",
    "score_exact",
    "score_math",
    "score_numeric",
]

MATH_TIMEOUT_S = 10.0
"""Bound on one math-verify check: parsing both sides and comparing."""

NO_ANSWER = Scored(0.0, None, "no answer")


async def ascore(task: Task, answer_text: str | None, scorer: ScorerName) -> Scored:
    """Judge ``answer_text`` (the output node's answer) against ``task`` with ``scorer``.
    Math checks run off the event loop (bounded by :data:`MATH_TIMEOUT_S`)."""
    if answer_text is None or not answer_text.strip():
        return NO_ANSWER
    if scorer == "code":
        # Imported here: the sandbox is optional machinery, written separately.
        sandbox = importlib.import_module("._sandbox", __package__)
        score_code: Callable[[Task, str], Awaitable[Scored]] = sandbox.ascore_code
        return await score_code(task, answer_text)
    early = _unscorable(task, answer_text)
    if early is not None:
        return early
    if scorer == "math":
        return await _ascore_math(task.answer or "", answer_text)
    return _SYNC[scorer](task, answer_text)


def _unscorable(task: Task, text: str | None) -> Scored | None:
    if text is None or not text.strip():
        return NO_ANSWER
    if task.answer is None or not task.answer.strip():
        return Scored(0.0, None, "the task has no gold answer")
    return None


def _short(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------- finding the answer

# "Answer: x", "**Final answer:** x", "The answer is x", "#### x"; the last one wins,
# since models often restate the requested format before answering.
_MARKER = re.compile(
    r"(?im)\b(?:final\s+|correct\s+)?answer[*_]*\s*(?:[:=]|\bis\b:?|\bwould\s+be\b:?)"
    r"|^[^\S\n]*####"
)


def boxed_contents(text: str) -> list[str]:
    r"""Contents of every closed ``\boxed{...}`` / ``\fbox{...}``, in order, braces
    balanced; ``\{`` and ``\}`` are literal braces, not grouping. One reader for the
    scorers, the roles' parsers and the MATH-500 loader."""
    out = []
    for match in _BOX.finditer(text):
        depth, i = 1, match.end()
        while i < len(text):
            c = text[i]
            if c == "\\":
                i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
                continue
            depth += c == "{"
            depth -= c == "}"
            if depth == 0:
                out.append(text[match.end() : i])
                break
            i += 1
    return out


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def answer_segment(text: str) -> str | None:
    r"""What follows the last answer marker (to the end of its line, or the next non-empty
    line; its ``\boxed{}`` if any), else the last ``\boxed{}``, else None."""
    last = None
    if "answer" in text or "####" in text or "ANSWER" in text or "Answer" in text:
        for last in _MARKER.finditer(text):  # noqa: B007 (the last one is wanted)
            pass
    if last is not None:
        rest = text[last.end() :].lstrip(" \t*_")
        lines = (line.strip(" \t*_") for line in rest.splitlines())
        segment = next((line for line in lines if line), "")
        boxed = boxed_contents(segment)
        return boxed[-1] if boxed else segment
    boxed = boxed_contents(text)
    return boxed[-1] if boxed else None


# ------------------------------------------------------------------------- numeric

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-\u2212]?)\s?(?:\$\s?)?(?P<sign2>[-\u2212]?)(?=\.?\d)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?"
    r"(?:[eE](?P<exp>[-+]?\d+))?(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d.]))?"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-\d.,\s]+)\}\s*\{\s*([\d.,\s]+)\}")
# Where the answer stops and its explanation starts: "18 (9 * 2)", "7, because ...".
_EXPLANATION = re.compile(r"(?i)\s*(?:\(|;|,\s|\.\s|\s(?:because|since|as|so|which)\b)")


def _clean_latex(text: str) -> str:
    text = text.replace("{,}", ",").replace("\\!", "").replace("\\,", "")
    text = text.replace("\\$", "$").replace("\\%", "%")
    return _LATEX_FRAC.sub(lambda m: f"{m[1].strip()}/{m[2].strip()}", text)


def _numbers(text: str) -> list[Fraction]:
    out = []
    text = _clean_latex(text)
    for m in _NUMBER.finditer(text):
        # "5 - 3" subtracts: a minus after an operand is no sign.
        i = m.start() - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        operand = i >= 0 and (text[i].isdigit() or text[i] in ")]}")
        negative = m["sign2"] != "" or (m["sign"] != "" and not operand)
        exp = int(m["exp"] or 0)
        if abs(exp) > 100:  # "1e999999" would build a huge integer
            continue
        digits = f"{m['int'] or '0'}{m['frac'] or ''}".replace(",", "")
        whole, _, decimals = digits.partition(".")
        value = Fraction(int(whole + decimals), 10 ** len(decimals))
        if exp or m["den"]:
            den = Decimal(m["den"] or 1)
            if den == 0:
                continue
            value = value * Fraction(10) ** exp / Fraction(den)
        out.append(-value if negative else value)
    return out


def _format_number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:  # no terminating decimal: keep it exact
        return f"{value.numerator}/{value.denominator}"
    return format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")


def _the_number(text: str) -> Fraction | None:
    segment = answer_segment(text)
    if segment is not None:
        head = _EXPLANATION.split(segment, maxsplit=1)[0]
        found = _numbers(head) or _numbers(segment)
        if found:
            return found[-1]
    found = _numbers(text)
    return found[-1] if found else None


@functools.lru_cache(maxsize=4096)  # one gold is read once per evaluation, not per graph
def _gold_number(answer: str) -> Fraction | None:
    return _the_number(answer)


def score_numeric(task: Task, text: str) -> Scored:
    """Exact numeric match (GSM8K): the answer's number equals the gold's, as fractions."""
    early = _unscorable(task, text)
    if early is not None:
        return early
    gold = _gold_number(task.answer or "")
    if gold is None:
        return Scored(0.0, None, f"the gold answer {task.answer!r} is not a number")
    got = _the_number(text)
    if got is None:
        return Scored(0.0, None, "no number found")
    extracted = _format_number(got)
    if got == gold:
        return Scored(1.0, extracted)
    return Scored(0.0, extracted, f"expected {_format_number(gold)}, got {extracted}")


# ------------------------------------------------------------------------ text, options

# Hyphens, dashes and slashes join words ("table-tops"): they become spaces; other
# punctuation is deleted, as in SQuAD ("U.S." = "US").
_JOINERS = dict.fromkeys(map(ord, "-\u2010\u2011\u2012\u2013\u2014\u2015/\\"), " ")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_text(text: str) -> str:
    """SQuAD-style normal form: Unicode NFKC, case folded, punctuation removed (word
    joiners such as hyphens become spaces), articles (a, an, the) dropped, whitespace
    collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_JOINERS)
    text = "".join(
        ch
        for ch in text
        if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    return " ".join(_ARTICLES.sub(" ", text).split())


def match_option(text: str, choices: Sequence[str]) -> int | None:
    """The index of the one option ``text`` names by its text, or None.

    After :func:`normalize_text`, an option matches when the text equals it, or when it
    appears in the text as whole words; an option inside a longer matching option is part
    of that one ("red" in "dark red"). Two different options matching is no answer, and so
    are options that normalize to nothing or alike."""
    said = normalize_text(text)
    if not said:
        return None
    keys = [normalize_text(c) for c in choices]
    exact = [i for i, k in enumerate(keys) if k and k == said]
    if exact:
        return exact[0] if len(exact) == 1 else None
    inside = [i for i, k in enumerate(keys) if k and f" {k} " in f" {said} "]
    longest = [
        i
        for i in inside
        if not any(keys[j] != keys[i] and f" {keys[i]} " in f" {keys[j]} " for j in inside)
    ]
    return longest[0] if len(longest) == 1 else None


# A letter alone ("B", "(b)", "**C**"), a letter leading with its punctuation ("(b) 7",
# "B) 7", "B. 7", "option B: ..."), a capital followed by a space ("B 7": only right after
# an answer marker, where "A kilometer" is tried as an option's text first), a letter
# named anywhere ("option B"), and letters marked in brackets anywhere ("I think (c)").
_LONE = re.compile(r"^[\W_]*([A-Za-z])[\W_]*$")
_LEAD = re.compile(
    r"^[\W_]*(?i:(?:option|choice|letter)\s+)?(?:[(\[]([A-Za-z])[)\]]|([A-Za-z])[).:](?!\w))"
)
_LOOSE = re.compile(r"^[\W_]*(?i:(?:option|choice|letter)\s+)?([A-Z])\s")
_NAMED = re.compile(r"(?i)\b(?:option|choice|letter)(?:\s*[(\[]|\s+)([A-Z])(?!\w)")
_MARKED = re.compile(r"(?<!\w)[(\[]([A-Za-z])[)\]]")
_CHOSEN = re.compile(r"(?i)\b(?:option|choice)\s+(?:is|would\s+be)\b\s*:?\s*(.*)")


def _first_group(match: re.Match[str] | None) -> str | None:
    return None if match is None else next(g for g in match.groups() if g).upper()


def read_choice(text: str, choices: Sequence[str] | None) -> tuple[str | None, str]:
    """The option letter a reply gives (upper case, within the options when ``choices``
    is known, else A-Z) and, when none, why. The marked answer is read first: a letter,
    then an option's text, then a capital followed by a space; then the whole text: a
    leading letter, "option B", the one bracketed letter, an option's text."""
    valid = LETTERS[: len(choices)] if choices else LETTERS
    out_of_range: list[str] = []

    def ok(letter: str | None) -> str | None:
        if letter is not None and letter not in valid:
            out_of_range.append(letter)
            return None
        return letter

    def by_text(place: str) -> str | None:
        index = match_option(place, choices) if choices else None
        return LETTERS[index] if index is not None else None

    segment = answer_segment(text)
    chosen = [m[1] for m in _CHOSEN.finditer(text)]
    for place in [p for p in (segment, chosen[-1] if chosen else None) if p is not None]:
        letter = (
            ok(_first_group(_LONE.match(place) or _LEAD.match(place)))
            or by_text(place)
            or ok(_first_group(_LOOSE.match(place)))
        )
        if letter is not None:
            return letter, ""
    letter = ok(_first_group(_LONE.match(text) or _LEAD.match(text)))
    if letter is None:
        named = [m.upper() for m in _NAMED.findall(text)]
        letter = ok(named[-1]) if named else None
    if letter is None:
        # "I pick (b)." names one option; "(a) 5, (b) 7" lists them and decides nothing.
        marked = {m.upper() for m in _MARKED.findall(text)} & set(valid)
        letter = marked.pop() if len(marked) == 1 else None
    letter = letter or by_text(text)
    if letter is not None:
        return letter, ""
    if out_of_range:
        return None, f"{out_of_range[0]} is not an option (options {valid[0]}-{valid[-1]})"
    return None, "no option letter" + (" or option text" if choices else "") + " found"


def score_choice(task: Task, text: str) -> Scored:
    """Multiple choice: the letter the answer gives (or the option it names by its text,
    with the task's choices known) equals the gold letter."""
    early = _unscorable(task, text)
    if early is not None:
        return early
    gold = _first_group(_LONE.match(task.answer or ""))
    if gold is None:
        return Scored(0.0, None, f"the gold answer {task.answer!r} is not an option letter")
    letter, why = read_choice(text, task.choices)
    if letter is None:
        return Scored(0.0, None, why)
    if letter == gold:
        return Scored(1.0, letter)
    return Scored(0.0, letter, f"expected {gold}, got {letter}")


_CONTAINS_MAX_WORDS = 12


def score_exact(task: Task, text: str) -> Scored:
    """Normalized exact match, or a short answer (at most 12 words) containing the
    normalized gold as whole words."""
    early = _unscorable(task, text)
    if early is not None:
        return early
    segment = answer_segment(text)
    answer = (segment if segment else text).strip()
    said, gold = normalize_text(answer), normalize_text(task.answer or "")
    if said == gold:
        return Scored(1.0, answer)
    if gold and len(said.split()) <= _CONTAINS_MAX_WORDS and f" {gold} " in f" {said} ":
        return Scored(1.0, answer)
    return Scored(0.0, answer, f"expected {_short(task.answer or '')!r}, got {_short(answer)!r}")


# ---------------------------------------------------------------------------- math

_NO_MATH_VERIFY = "scoring math answers needs math-verify; install it with: pip install math-verify"
_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_WORDS_ONLY = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]+)*")
# Prose around a formula: words of 3+ letters outside LaTeX commands and their first
# argument (\text{ cm}, \begin{pmatrix}).
_PROSE = re.compile(r"(?<![A-Za-z])[A-Za-z]{3,}")
_COMMAND = re.compile(r"\\[A-Za-z]+\s*(?:\{[^{}]*\})?")
_MATH_ENV = re.compile(r"(?<!\\)\$|\\\(|\\\[")
# Arithmetic that runs for ever, or until memory runs out: towers of powers, exponents of
# 6+ digits (or sympy's expansions of them), factorials of 5+ digits. Refused up front.
_EXPLOSIVE = re.compile(
    r"\d\s*(?:\^|\*\*)\s*\{?\s*\(?\s*\d+\s*(?:\^|\*\*)|(?:\^|\*\*)\s*\{?\s*\d{6,}|\d{5,}\s*!"
)


def _as_latex(answer: str) -> str:
    r"""A bare answer as math-verify reads it best: ``$\boxed{...}$``, words as
    ``\text{}`` (else "Evelyn" is a product of six symbols)."""
    answer = answer.strip().rstrip(".").strip()
    for left, right in _DELIMITERS:
        if answer.startswith(left) and answer.endswith(right) and len(answer) > 2 * len(left):
            answer = answer[len(left) : -len(right)].strip()
            break
    if _WORDS_ONLY.fullmatch(answer):
        answer = f"\\text{{{answer}}}"
    return f"$\\boxed{{{answer}}}$"


def _math_source(text: str) -> tuple[str, str | None]:
    """What math-verify parses for the reply: the marked answer, or a short one-line
    reply, as a bare answer (returned too); prose as it is (math-verify finds the formula
    in it)."""
    segment = answer_segment(text)
    if segment is None and "\n" not in text.strip() and len(text) <= 100:
        segment = text
    if segment is None:
        return text, None
    has_env = _MATH_ENV.search(segment) is not None
    prose = _PROSE.search(_COMMAND.sub(" ", segment)) is not None
    if has_env or (prose and not _WORDS_ONLY.fullmatch(segment.strip().rstrip("."))):
        return segment, None
    return _as_latex(segment), segment.strip()


def _math_verify() -> Any:
    try:  # through import_module: math-verify has no type information for mypy
        mv = importlib.import_module("math_verify")
    except ImportError:
        raise MissingDependency(_NO_MATH_VERIFY) from None
    # Its timeouts are off because this module bounds each check itself; its one-time
    # warning that nothing bounds the call would be wrong.
    for name in ("math_verify.parser", "math_verify.grader"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "TIMEOUT_WARNING_SHOWN"):
            setattr(module, "TIMEOUT_WARNING_SHOWN", True)  # noqa: B010
    return mv


def _extracted(parsed: Sequence[Any]) -> str:
    """The text math-verify read (its second item), else the expression it built."""
    return str(parsed[-1] if isinstance(parsed[-1], str) else parsed[0])


def _check_math(gold: str, text: str) -> Scored:
    """One math-verify check, unbounded: it runs in the math-verify process."""
    mv = _math_verify()
    source, bare = _math_source(text)
    pred = mv.parse(source, parsing_timeout=None)
    if not pred:
        return Scored(0.0, None, "no math answer found")
    read = _extracted(pred)
    extracted = bare if bare is not None else read
    if _EXPLOSIVE.search(read):  # parsing leaves powers unevaluated; comparing does not
        return Scored(0.0, _short(extracted), "answer too large to evaluate safely")
    golds = mv.parse(_as_latex(gold) if not boxed_contents(gold) else gold, parsing_timeout=None)
    if not golds:
        return Scored(0.0, extracted, f"the gold answer {gold!r} could not be parsed")
    if mv.verify(golds, pred, timeout_seconds=None):
        return Scored(1.0, extracted)
    return Scored(0.0, extracted, f"expected {_short(gold)}, got {_short(extracted)}")


def score_math(task: Task, text: str, *, timeout_s: float = MATH_TIMEOUT_S) -> Scored:
    """Mathematical equivalence by math-verify (the bare gold, e.g. ``\\frac{1}{2}``,
    against the marked answer or the reply), checked in the math-verify process within
    ``timeout_s``. Blocks: safe from any thread; from async code use :func:`ascore`."""
    early = _unscorable(task, text)
    if early is not None:
        return early
    return _check_in_worker(task.answer or "", text, timeout_s)


@functools.cache
def _math_thread() -> ThreadPoolExecutor:
    """Where async callers wait: not in the loop's default executor, whose threads hold
    up ``asyncio.run``'s shutdown."""
    return ThreadPoolExecutor(1, thread_name_prefix="agentgraph-math")


async def _ascore_math(gold: str, text: str, timeout_s: float = MATH_TIMEOUT_S) -> Scored:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_math_thread(), _check_in_worker, gold, text, timeout_s)


# The math-verify process, shared by every caller, one check at a time.
_WORKER_LOCK = threading.Lock()
_worker: _MathWorker | None = None
_WORKER_START_S = 60.0  # importing sympy on a loaded machine; not part of a check's bound


class _MathWorker:
    """A child running :func:`_serve`, JSON lines both ways; a reader thread queues its
    replies, so that they are awaited with a timeout on every platform."""

    def __init__(self) -> None:
        env = dict(os.environ)  # the child imports this package from where it is now,
        root = str(Path(__file__).resolve().parent.parent)  # not from the working directory
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", "from agentgraph._scoring import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name="agentgraph-math-reader", daemon=True).start()
        if self._next(_WORKER_START_S) != "ready":
            self.stop()
            raise AgentGraphError(
                f"the math-verify process did not start (exit code {self.proc.returncode}; "
                "its error output, if any, is above)"
            )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(line.rstrip("\n"))
        self.replies.put(None)
        self.proc.stdout.close()

    def _next(self, timeout_s: float) -> str | None:
        with contextlib.suppress(queue.Empty):
            return self.replies.get(timeout=timeout_s)
        return None

    def ask(self, gold: str, text: str, timeout_s: float) -> Scored:
        """The worker's verdict; raises TimeoutError past ``timeout_s``, OSError or
        ValueError when the process died or replied nonsense."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps([gold, text]) + "\n")
        self.proc.stdin.flush()
        reply = self._next(timeout_s)
        if reply is None:
            if self.proc.poll() is None:
                raise TimeoutError(f"math-verify took more than {timeout_s:g}s")
            raise OSError(f"the math-verify process ended (exit code {self.proc.returncode})")
        score, extracted, reason = json.loads(reply)
        return Scored(float(score), extracted, reason)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


def _stop_worker() -> None:
    global _worker
    with _WORKER_LOCK:
        if _worker is not None:
            _worker.stop()
            _worker = None


def _check_in_worker(gold: str, text: str, timeout_s: float) -> Scored:
    global _worker
    if importlib.util.find_spec("math_verify") is None:  # fail in the caller, and early
        raise MissingDependency(_NO_MATH_VERIFY)
    with _WORKER_LOCK:  # a turn at the worker: every check before this one is bounded
        if _worker is not None and _worker.proc.poll() is not None:
            _worker.stop()  # it died between checks
        if _worker is None or _worker.proc.returncode is not None:
            _worker = _MathWorker()
            atexit.unregister(_stop_worker)  # once: no orphan, no "still running" warning
            atexit.register(_stop_worker)
        try:
            return _worker.ask(gold, text, timeout_s)
        except (OSError, ValueError) as exc:  # TimeoutError included: stop the check
            _worker.stop()
            _worker = None
            reason = str(exc) if isinstance(exc, TimeoutError) else f"math-verify failed: {exc}"
            return Scored(0.0, None, reason)


def _serve() -> None:
    """The math-verify process: checks ``[gold, text]`` lines from stdin until it closes.
    Replies go to the original stdout only; anything a library prints goes to stderr."""
    out, sys.stdout = sys.stdout, sys.stderr
    _math_verify()  # failing, the process ends before "ready", with its error on stderr
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        gold, text = json.loads(line)
        try:
            scored = _check_math(gold, text)
        except Exception as exc:
            scored = Scored(0.0, None, f"math-verify failed: {type(exc).__name__}: {exc}")
        out.write(json.dumps([scored.score, scored.extracted, scored.reason]) + "\n")
        out.flush()


_SYNC: dict[ScorerName, Callable[[Task, str], Scored]] = {
    "numeric": score_numeric,
    "math": score_math,
    "choice": score_choice,
    "exact": score_exact,
}
