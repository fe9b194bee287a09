"""Scorers of final answers: numeric (GSM8K), math (MATH-500, by math-verify), multiple
choice by letter or option text, normalized exact text; dispatch, and how math checks
are bounded off the event loop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentgraph import MissingDependency, _scoring
from agentgraph._scoring import (
    NO_ANSWER,
    _ascore_math,
    answer_segment,
    ascore,
    match_option,
    normalize_text,
    read_choice,
    score_choice,
    score_exact,
    score_math,
    score_numeric,
)
from agentgraph._tasks import Scored, Task


def task(answer: str | None, choices: tuple[str, ...] | None = None) -> Task:
    return Task("t1", "q", answer=answer, choices=choices)


# ---------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("gold", "text", "extracted"),
    [
        ("18", "Janet sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n#### 18", "18"),
        ("1000", "Answer: 1,000", "1000"),
        ("1000", "The total is $1000.00", "1000"),
        ("1000", "1000.0", "1000"),
        ("1000", "1e3", "1000"),  # E notation is read as a number
        ("1,000", "1000", "1000"),  # the gold is read the same way
        ("-5", "The temperature drops to -5 degrees.", "-5"),
        ("-5", "It ends at \u22125", "-5"),  # Unicode minus
        ("-5", "Answer: $-5", "-5"),
        ("50", "Answer: 50%", "50"),  # the percent sign is a unit
        ("0.75", "\\boxed{\\frac{3}{4}}", "0.75"),
        ("0.75", "Answer: 3/4", "0.75"),
        ("18", "Answer: 18 (9 * 2)", "18"),  # cut before the explanation
        ("18", "Answer: 9 * 2 = 18", "18"),
        ("7", "The answer is 7 because 3 and 4 make it", "7"),
        ("18", "I count 16.\nAnswer:\n\n18", "18"),
        ("18", "**Final Answer:** $18", "18"),
        ("18", "so she makes 16 + 2 = 18 dollars", "18"),  # no marker: the last number
        ("18", "The result is \\boxed{18}. Checking: 9 + 9", "18"),  # boxed beats last
        ("1000", "Answer: 1{,}000", "1000"),
        ("2.5", "It costs $ 2.50 in total", "2.5"),
    ],
)
def test_numeric_matches(gold: str, text: str, extracted: str) -> None:
    assert score_numeric(task(gold), text) == Scored(1.0, extracted)


@pytest.mark.parametrize(
    ("gold", "text", "reason"),
    [
        ("18", "Answer: 16", "expected 18, got 16"),
        ("18", "I don't know", "no number found"),
        ("5", "5 - 3", "expected 5, got 3"),  # a minus after an operand is no sign
        ("2", "Answer: $-2$", "expected 2, got -2"),
        ("0.5", "50%", "expected 0.5, got 50"),
        ("1/3", "0.3333333", "expected 1/3, got 0.3333333"),  # exact, not floats
        ("eighteen", "18", "the gold answer 'eighteen' is not a number"),
    ],
)
def test_numeric_mismatches_say_why(gold: str, text: str, reason: str) -> None:
    scored = score_numeric(task(gold), text)
    assert (scored.score, scored.reason) == (0.0, reason)


@given(st.integers(min_value=-(10**12), max_value=10**12), st.text(max_size=30))
def test_integers_in_any_dress_score(n: int, prefix: str) -> None:
    for dressed in (str(n), f"{n:,}", f"{n}.0", f"{n}.00"):
        assert score_numeric(task(str(n)), f"{prefix}\nAnswer: {dressed}").score == 1.0
    if n >= 0:
        assert score_numeric(task(str(n)), f"#### ${n:,}.00").score == 1.0


# ---------------------------------------------------------------------- answer segment


@pytest.mark.parametrize(
    ("text", "segment"),
    [
        ("Answer: 7", "7"),
        ("**Final Answer:** 42", "42"),
        ("Answer: 1\nAnswer: 2", "2"),
        ("The answer is (B).", "(B)."),
        ("work\n#### 12", "12"),
        ("Final Answer: The final answer is $\\boxed{7}$.", "7"),
        ("so \\boxed{\\frac{1}{2}} it is", "\\frac{1}{2}"),
        ("To answer this question we add.", None),
        ("no marker at all", None),
    ],
)
def test_answer_segment(text: str, segment: str | None) -> None:
    assert answer_segment(text) == segment


# ---------------------------------------------------------------------------- choice

UNITS = ("meter", "kilometer", "centimeter", "millimeter")
LAB = (
    "wear a lab coat",
    "wash instruments and table tops",
    "keep the window open",
    "wash hands only",
)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B.", "B"),
        ("**B**", "B"),
        ("option B", "B"),
        ("I'd go with option b here", "B"),
        ("The answer is B", "B"),
        ("The correct option is (b).", "B"),
        ("Answer: B) kilometer", "B"),
        ("Answer: B 7", "B"),
        ("Reasoning.\nAnswer: A\nAnswer: [B]", "B"),
        ("\\boxed{B}", "B"),
        ("I pick (b).", "B"),
        ("The answer is the kilometer.", "B"),
        ("the kilometer", "B"),
        ("Answer: A kilometer", "B"),  # the article, not the letter A
        ("Answer: KILOMETER!", "B"),
        ("Cities are far apart, so distances between them use the kilometer.", "B"),
    ],
)
def test_choice_letters_and_option_texts(text: str, letter: str) -> None:
    assert score_choice(task("B", UNITS), text) == Scored(1.0, letter)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Answer: E", "E is not an option (options A-D)"),
        ("meter or kilometer?", "no option letter or option text found"),  # ambiguous
        ("Options: (a) meter, (b) kilometer", "no option letter or option text found"),
        ("A dog barked", "no option letter or option text found"),
        ("Answer: kilometers", "no option letter or option text found"),  # no stemming
    ],
)
def test_choice_without_an_answer(text: str, reason: str) -> None:
    assert score_choice(task("B", UNITS), text) == Scored(0.0, None, reason)


def test_choice_wrong_letter_and_texts_of_long_options() -> None:
    assert score_choice(task("A", UNITS), "(c)") == Scored(0.0, "C", "expected A, got C")
    lab = task("B", LAB)
    assert score_choice(lab, "wash instruments and table tops").score == 1.0
    assert score_choice(lab, "Answer: Wash instruments and table-tops.").score == 1.0
    # "wash hands only" and option B share words but neither contains the other
    assert score_choice(lab, "wash hands only").extracted == "D"


def test_choice_without_known_choices_reads_letters_only() -> None:
    assert score_choice(task("C"), "I think it's (c) Paris") == Scored(1.0, "C")
    assert score_choice(task("C"), "Paris").score == 0.0
    assert score_choice(task("Z"), "Answer: Z").score == 1.0  # A-Z when choices unknown


def test_choice_gold_must_be_a_letter() -> None:
    assert score_choice(task("kilometer", UNITS), "B").reason == (
        "the gold answer 'kilometer' is not an option letter"
    )


@pytest.mark.parametrize(
    ("text", "choices", "index"),
    [
        ("the kilometer", UNITS, 1),
        ("The Kilometer.", UNITS, 1),
        ("Answer is kilometer for sure", UNITS, 1),
        ("meter", UNITS, 0),  # whole words: "kilometer" does not contain "meter"
        ("meter, not kilometer", UNITS, None),  # two options: no answer
        ("dark red", ("red", "dark red", "blue"), 1),  # inside a longer match
        ("red", ("red", "dark red", "blue"), 0),
        ("red and blue", ("red", "dark red", "blue"), None),
        ("the", ("the", "a"), None),  # options that normalize to nothing
        ("Paris", ("Paris", "paris."), None),  # options alike
        ("", UNITS, None),
    ],
)
def test_match_option(text: str, choices: tuple[str, ...], index: int | None) -> None:
    assert match_option(text, choices) == index


def test_normalize_text_is_squad_like() -> None:
    assert normalize_text("  The   U.S.  Navy! ") == "us navy"
    assert normalize_text("table-tops\u2014and chairs") == "table tops and chairs"
    assert normalize_text("\uff21\uff22\uff23 An apple") == "abc apple"  # NFKC, articles


@given(st.text(max_size=200))
def test_scorers_never_raise(text: str) -> None:
    for scored in (
        score_numeric(task("18"), text),
        score_choice(task("B", UNITS), text),
        score_exact(task("Paris"), text),
    ):
        assert 0.0 <= scored.score <= 1.0
    assert read_choice(text, UNITS)[0] in (None, "A", "B", "C", "D")


# ---------------------------------------------------------------------------- exact


@pytest.mark.parametrize(
    ("gold", "text", "score"),
    [
        ("Paris", "Paris", 1.0),
        ("Paris", "  paris. ", 1.0),
        ("The Beatles", "beatles", 1.0),
        ("Paris", "It is in France.\nAnswer: Paris", 1.0),
        ("Tokyo", "The capital of Japan is Tokyo.", 1.0),  # a short sentence with the gold
        ("Tokyo", "Kyoto", 0.0),
        ("Tokyo", "Tokyoite", 0.0),  # whole words only
        ("Tokyo", " ".join(["word"] * 12) + " Tokyo", 0.0),  # too long to be an answer
        ("New York", "new-york", 1.0),
    ],
)
def test_exact(gold: str, text: str, score: float) -> None:
    assert score_exact(task(gold), text).score == score


def test_exact_reason() -> None:
    assert score_exact(task("Tokyo"), "Answer: Kyoto") == Scored(
        0.0, "Kyoto", "expected 'Tokyo', got 'Kyoto'"
    )


# ---------------------------------------------------------------------------- math

# (gold as in MATH-500, final answer text, verdict of a human grader = of math-verify)
MATH_PAIRS = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "\\frac12", True),
    ("\\frac{1}{2}", "1/2", True),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
    ("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("(1,2]", "(1, 2]", True),
    ("(1,2]", "(1,2)", False),
    ("(1,2]", "[1,2]", False),
    ("3", "x=3", True),
    ("x=3", "3", True),
    ("10^\\circ", "10", True),
    ("3^\\circ", "3 degrees", True),
    ("\\text{(C)}", "C", True),
    ("\\text{(C)}", "(C)", True),
    ("\\text{(C)}", "\\text{(D)}", False),
    ("\\text{Evelyn}", "Evelyn", True),
    ("\\text{Monday}", "Tuesday", False),
    ("\\text{even}", "even", True),
    ("\\dfrac{3}{4}", "0.75", True),
    ("\\dfrac{14}{3}", "14/3", True),
    ("\\frac{7}{2}", "3\\frac{1}{2}", True),  # a mixed number
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("5\\sqrt{2}", "\\sqrt{50}", True),
    ("\\sqrt[3]{2}", "2^{1/3}", True),
    ("x^2+7x+10", "(x+5)(x+2)", True),
    ("y=2x+3", "2x+3", True),
    ("3+2i", "2i+3", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("1,2", "x = 1 \\text{ or } x = 2", True),
    ("2", "2, 3", False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", True),
    ("(-\\infty, 3)", "(-\\infty, 3)", True),
    ("[2,5]", "x \\in [2, 5]", True),
    ("1000", "1,000", True),
    ("\\$32", "\\$32.00", True),
    ("12\\text{ inches}", "12", True),
    ("16", "16 \\text{ square units}", True),
    ("13", "13.0000001", False),
    ("\\frac{1}{3}", "0.333", False),
    ("\\pi", "3.14", False),
    # whole replies: the marked answer, the boxed one, or the formula in the prose
    ("\\frac{1}{2}", "So we get half.\nAnswer: $\\frac{1}{2}$", True),
    ("7", "Final Answer: The final answer is $\\boxed{7}$. I hope it is correct.", True),
    ("12\\pi", "The area is $12\\pi$ square units.", True),
    ("3", "Adding, we get 1 + 2 = 3.\n\nThus there are 3 apples.", True),
]

# Where math-verify disagrees with a human grader (listed in agentgraph._scoring): the
# verdict it gives today. A change here means the module docstring needs updating.
MATH_DISAGREEMENTS = [
    ("\\frac{1}{3}", "0.\\overline{3}", False),
    ("5", "five", False),
    ("(-\\infty, 3)", "x < 3", False),
    ("i", "\\sqrt{-1}", False),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1,2)", False),
    ("90^\\circ", "\\frac{\\pi}{2}", False),
    ("\\pi", "3.1415927", True),
    ("\\frac{1}{3}", "0.3333333", True),
    ("10\\%", "0.1", True),
    ("3", "Answer: 3 (since 1+2)", False),
]


@pytest.mark.parametrize(("gold", "text", "verdict"), MATH_PAIRS + MATH_DISAGREEMENTS)
def test_math_verdicts(gold: str, text: str, verdict: bool) -> None:
    scored = score_math(task(gold), text)
    assert scored.score == (1.0 if verdict else 0.0), scored
    assert (scored.reason is None) is verdict


def test_math_reasons() -> None:
    assert score_math(task("\\frac{1}{2}"), "\\frac{1}{3}") == Scored(
        0.0, "\\frac{1}{3}", "expected \\frac{1}{2}, got \\frac{1}{3}"
    )
    assert score_math(task("2"), "I have no idea") == Scored(0.0, None, "no math answer found")
    assert score_math(task("2"), "  ") == NO_ANSWER
    assert score_math(task(None), "2").reason == "the task has no gold answer"


@pytest.mark.parametrize(
    "text", ["9^{9^{9^9}}", "Answer: $2^{2^{30}}$", "\\boxed{(x+1)^{100000}}", "1000000!"]
)
def test_math_answers_too_large_to_evaluate(text: str) -> None:
    """Arithmetic that holds the GIL in C (no thread or signal can stop it) is refused."""
    scored = score_math(task("3"), text)
    assert (scored.score, scored.reason) == (0.0, "answer too large to evaluate safely")


def test_math_check_past_its_bound_is_stopped() -> None:
    """Expanding (x+1)^2000 takes seconds: the check gives up at the bound and its process
    is killed (not left computing); the next check starts another."""
    assert score_math(task("1"), "1").score == 1.0  # the process is up: not timed here
    process = _scoring._worker
    start = time.monotonic()
    scored = score_math(task("3"), "(x+1)^{2000}", timeout_s=0.3)
    assert scored == Scored(0.0, None, "math-verify took more than 0.3s")
    assert time.monotonic() - start < 3
    assert process is not None and process.proc.returncode is not None
    assert score_math(task("3"), "3").score == 1.0


def test_math_process_that_died_is_replaced() -> None:
    assert score_math(task("1"), "1").score == 1.0
    assert _scoring._worker is not None
    _scoring._worker.proc.kill()
    _scoring._worker.proc.wait()
    assert score_math(task("\\frac{1}{2}"), "0.5").score == 1.0


def test_math_from_a_worker_thread() -> None:
    """math-verify's own timeouts raise ValueError outside the main thread; ours do not."""
    out: list[Scored] = []
    worker = threading.Thread(target=lambda: out.append(score_math(task("1/2"), "0.5")))
    worker.start()
    worker.join(60)
    assert out == [Scored(1.0, "0.5")]


def test_math_logs_no_timeout_warning(capfd: pytest.CaptureFixture[str]) -> None:
    """Its timeouts are off because the process is bounded; it need not warn about it."""
    _scoring._stop_worker()  # a fresh process, which would warn on its first check
    assert score_math(task("4"), "2+2").score == 1.0
    assert "Timeout is disabled" not in capfd.readouterr().err


async def test_math_without_math_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "math_verify", None)
    with pytest.raises(MissingDependency, match="pip install math-verify"):
        score_math(task("1"), "1")
    with pytest.raises(MissingDependency, match="pip install math-verify"):
        await ascore(task("1"), "1", "math")


async def test_math_checks_leave_the_event_loop_free() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        scored = await _ascore_math("3", "(x+1)^{2000}", 0.5)
    finally:
        ticker.cancel()
    assert scored.reason == "math-verify took more than 0.5s"
    assert ticks >= 20  # the loop kept running while sympy worked
    results = await asyncio.gather(*(ascore(task(str(n)), f"{n}", "math") for n in range(8)))
    assert [r.score for r in results] == [1.0] * 8


async def test_cancelled_math_checks() -> None:
    """A check cancelled while it runs ends within its bound; those cancelled while they
    wait for their turn never run."""
    running = asyncio.create_task(_ascore_math("3", "(x+1)^{2000}", 1.0))
    waiting = [asyncio.create_task(ascore(task("2"), "2", "math")) for _ in range(3)]
    await asyncio.sleep(0.3)
    for pending in [running, *waiting]:
        pending.cancel()
    for pending in [running, *waiting]:
        with pytest.raises(asyncio.CancelledError):
            await pending
    start = time.monotonic()
    assert (await ascore(task("\\frac{1}{2}"), "0.5", "math")).score == 1.0
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("scorer", ["numeric", "math", "choice", "exact", "code"])
@pytest.mark.parametrize("answer", [None, "", "  \n"])
async def test_no_answer(scorer: str, answer: str | None) -> None:
    assert await ascore(task("1"), answer, scorer) == Scored(0.0, None, "no answer")  # type: ignore[arg-type]


async def test_dispatch() -> None:
    assert (await ascore(task("18"), "#### 18", "numeric")).score == 1.0
    assert (await ascore(task("B", UNITS), "the kilometer", "choice")).extracted == "B"
    assert (await ascore(task("Paris"), "paris", "exact")).score == 1.0
    assert (await ascore(task("\\frac12"), "0.5", "math")).score == 1.0


async def test_code_goes_to_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Task, str]] = []

    async def ascore_code(t: Task, answer_text: str) -> Scored:
        seen.append((t, answer_text))
        return Scored(1.0, answer_text)

    sandbox = types.ModuleType("agentgraph._sandbox")
    sandbox.ascore_code = ascore_code  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agentgraph._sandbox", sandbox)
    t = Task("c", "write f", tests="assert f() == 1", entry_point="f")
    assert await ascore(t, "def f(): return 1", "code") == Scored(1.0, "def f(): return 1")
    assert seen == [(t, "def f(): return 1")]


def test_importing_scoring_is_light() -> None:
    """The core never imports the roles, and math-verify (sympy) loads on first use."""
    code = (
        "import sys, agentgraph._scoring\n"
        "heavy = {'agentgraph.roles', 'math_verify', 'sympy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert __import__('threading').active_count() == 1\n"
        "assert agentgraph._scoring._worker is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
