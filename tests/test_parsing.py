"""The parsers of agentgraph.roles: answers per task kind, verdicts, routing choices; and
how roles record them in the typed fields of their messages."""

from __future__ import annotations

import asyncio
import string
from decimal import Decimal

import pytest
from agentgraph.roles import MajorityVote, Proposer, Router, Synthesizer, Verifier
from agentgraph.roles._parse import (
    canonical_number,
    extract_answer,
    normalize_answer,
    parse_choice,
    parse_json_reply,
    parse_verdict,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import agentgraph as ag

TASKS = ("text", "math", "multiple_choice", "code")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 7", "7"),
        ("3 + 4 = 7", "7"),
        ("Let me think.\nAnswer: 12\nAnswer: 13", "13"),
        ("**Final answer:** 42", "42"),
        ("#### 1,234", "1234"),
        ("Answer: $1,000.00", "1000"),
        ("Answer: 5.0", "5"),
        ("Answer: 50%", "50"),
        ("Answer: -3.", "-3"),
        ("Answer: 3 + 4 = 7", "7"),
        ("Answer:\n\n12", "12"),
        ("The result is \\boxed{7}. Then 2 more", "7"),
        ("\\boxed{\\frac{3}{4}}", "0.75"),
        ("\\boxed{x^{2} = 9}", "9"),
        ("Final Answer: The final answer is $\\boxed{7}$. I hope it is correct.", "7"),
        ("3 + 4 = 7.\n\nThis is because 3 and 4", "7"),  # run on after the result
        ("The answer is 7 since 3 and 4 make it", "7"),
        ("3 + 4 equals 7, not 8", "7"),
        ("1/3", "1/3"),
        ("6/8", "0.75"),
        ("It costs $ 2.50 in total", "2.5"),
        ("7 apples and 3 pears", "3"),
        # More than a number: kept as written (MATH-500 answers), not cut to a digit.
        ("Answer: \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("Answer: $\\sqrt{3}$", "\\sqrt{3}"),
        ("so \\boxed{(1, 2]}", "(1, 2]"),
        ("\\boxed{\\text{east}}", "\\text{east}"),
        ("\\boxed{10^\\circ}", "10^\\circ"),
        ("\\boxed{\\$1,000}", "1000"),
    ],
)
def test_math_answers(text: str, expected: str) -> None:
    parsed = extract_answer(text, "math")
    assert parsed == type(parsed)(expected)


@pytest.mark.parametrize("text", ["no idea", "Answer: seven", ""])
def test_math_without_a_number_falls_back_with_an_error(text: str) -> None:
    parsed = extract_answer(text, "math")
    assert parsed.value == text.removeprefix("Answer: ").strip()
    assert parsed.error is not None
    assert parsed.error.startswith("expected a number")
    assert repr(text.strip()) in parsed.error


def test_parse_errors_truncate_what_they_saw() -> None:
    parsed = extract_answer("blah " * 100, "math")
    assert parsed.error is not None
    assert parsed.error.endswith("...'") and len(parsed.error) < 160


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: (B)", "B"),
        ("answer: c", "C"),
        ("Answer: Option C", "C"),
        ("Answer: B) 7", "B"),
        ("Answer: B 7", "B"),
        ("The answer is B", "B"),
        ("The correct option is (d).", "D"),
        ("I think the answer would be: e", "E"),
        ("B)", "B"),
        ("b", "B"),
        ("(J)", "J"),
        ("**B**", "B"),
        ("a) 5 is right", "A"),
        ("\\boxed{E}", "E"),
        ("Reasoning first.\nAnswer: A\nAnswer: [C]", "C"),
        ("I pick (b).", "B"),
    ],
)
def test_multiple_choice_letters(text: str, expected: str) -> None:
    assert extract_answer(text, "multiple_choice").value == expected
    assert extract_answer(text, "multiple_choice").error is None


@pytest.mark.parametrize(
    "text",
    [
        "I think it is obvious",
        "A dog barked",
        "Because",
        "Answer: a number",
        "K)",
        "Options: (a) 5, (b) 7",
    ],
)
def test_multiple_choice_words_are_not_letters(text: str) -> None:
    parsed = extract_answer(text, "multiple_choice")
    assert parsed.error is not None and "option letter A-J" in parsed.error


UNITS = ("meter", "kilometer", "centimeter", "millimeter")
LAB = ("wear a lab coat", "wash instruments and table tops", "open a window", "wash hands")
CITIES = ("London", "Berlin", "Paris", "Rome")


@pytest.mark.parametrize(
    ("text", "choices", "expected"),
    [
        ("the kilometer", UNITS, "B"),
        ("The answer is the kilometer.", UNITS, "B"),
        ("Answer: Kilometer", UNITS, "B"),
        ("Answer: A kilometer", UNITS, "B"),  # "A" is the article here
        ("Distances between cities are measured in kilometers, so the kilometer.", UNITS, "B"),
        ("wash instruments and table tops", LAB, "B"),
        ("Answer: Wash instruments and table-tops.", LAB, "B"),
        ("I think it's (c) Paris", CITIES, "C"),
        ("It has to be Paris.", CITIES, "C"),
        ("Answer: (D)", CITIES, "D"),  # letters still come first
        ("Answer: B 7", UNITS, "B"),
    ],
)
def test_multiple_choice_options_given_by_text(
    text: str, choices: tuple[str, ...], expected: str
) -> None:
    assert extract_answer(text, "multiple_choice", choices) == type(
        extract_answer(text, "multiple_choice")
    )(expected)


@pytest.mark.parametrize(
    ("text", "choices", "error"),
    [
        ("Answer: E", UNITS, "an option letter A-D or an option's text"),  # out of range
        ("(e)", UNITS, "an option letter A-D or an option's text"),
        ("meter or kilometer, hard to say", UNITS, "or an option's text"),  # ambiguous
        ("Answer: meter, not kilometer", UNITS, "or an option's text"),
        ("the kilometer", None, "an option letter A-J"),  # no choices: as before
    ],
)
def test_multiple_choice_without_an_option(
    text: str, choices: tuple[str, ...] | None, error: str
) -> None:
    parsed = extract_answer(text, "multiple_choice", choices)
    assert parsed.error is not None and error in parsed.error


def test_letters_past_j_with_that_many_choices() -> None:
    many = tuple(f"option {i}" for i in range(12))
    assert extract_answer("Answer: L", "multiple_choice", many).value == "L"
    assert extract_answer("Answer: L", "multiple_choice").error is not None


def test_votes_compare_options_by_letter() -> None:
    assert normalize_answer("the kilometer", "multiple_choice", UNITS) == "B"
    assert normalize_answer("(b)", "multiple_choice", UNITS) == "B"
    assert normalize_answer("the kilometer", "multiple_choice") == "the kilometer"


async def test_a_proposer_reads_an_option_given_by_its_text() -> None:
    spec = ag.NodeSpec(role="proposer", model="m")
    ctx = ag.NodeContext(
        "Which unit measures the distance between cities?",
        node="p",
        spec=spec,
        task="multiple_choice",
        choices=list(UNITS),
        backend=ag.ScriptedBackend("The answer is the kilometer."),
    )
    out = await Proposer("p", spec).run(ctx, [])
    assert (out.answer, out.parse_error) == ("B", None)
    # without the options the same reply is unreadable, as before
    ctx = ag.NodeContext(
        "q",
        node="p",
        spec=spec,
        task="multiple_choice",
        backend=ag.ScriptedBackend("The answer is the kilometer."),
    )
    out = await Proposer("p", spec).run(ctx, [])
    assert out.parse_error is not None


async def test_a_synthesizer_reads_an_option_given_by_its_text() -> None:
    spec = ag.NodeSpec(role="synthesizer", model="m", inputs=("a",))
    ctx = ag.NodeContext(
        "q",
        node="s",
        spec=spec,
        task="multiple_choice",
        choices=LAB,
        backend=ag.ScriptedBackend("Both agree: wash instruments and table tops."),
    )
    out = await Synthesizer("s", spec).run(ctx, [ag.Message("a", "proposer", answer="B")])
    assert (out.answer, out.parse_error) == ("B", None)


async def test_vote_counts_an_option_text_as_its_letter() -> None:
    spec = ag.NodeSpec(role="vote", inputs=("a", "b", "c"))
    inputs = [
        ag.Message("a", "proposer", answer="A"),
        ag.Message("b", "proposer", answer="the kilometer"),  # e.g. a fallback answer
        ag.Message("c", "proposer", answer="(b)"),
    ]
    ctx = ag.NodeContext("q", node="v", spec=spec, task="multiple_choice", choices=UNITS)
    out = await MajorityVote("v", spec).run(ctx, inputs)
    assert dict(out.data["votes"]) == {"A": 1, "B": 2}
    assert out.candidate == "b"


@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("```python\nprint(1)\n```", "print(1)", None),
        ("Two tries:\n```py\na = 1\n```\nthen\n```\nb = 2\n```\ndone", "b = 2", None),
        ("```print(1)```", "print(1)", None),
        ("```python\ndef f():\n    return 1", "def f():\n    return 1", "closed"),
        ("def f():\n    return 1\n", "def f():\n    return 1", "fenced"),
    ],
)
def test_code_blocks(text: str, expected: str, error: str | None) -> None:
    parsed = extract_answer(text, "code")
    assert parsed.value == expected
    assert (parsed.error is None) if error is None else (error in (parsed.error or ""))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "Paris"),
        ("  The capital is Paris.\n", "The capital is Paris."),
        ("It is in France.\nAnswer: Paris", "Paris"),
    ],
)
def test_text_answers(text: str, expected: str) -> None:
    assert extract_answer(text, "text").value == expected
    assert extract_answer(text, "text").error is None


@pytest.mark.parametrize(
    ("text", "verdict", "score"),
    [
        ("Verdict: correct\nScore: 0.8", True, 0.8),
        ("Verdict: incorrect\nScore: 0.1", False, 0.1),
        ("Verdict: not correct", False, 0.0),
        ("**Verdict:** Correct", True, 1.0),
        ("Score: 8/10", True, 0.8),
        ("I'd give it 3 out of 10", False, 0.3),
        ("Confidence: 90%", True, 0.9),
        ("80%", True, 0.8),
        ("Score: 7", True, 0.7),  # a bare score above 1 is out of ten,
        ("Score: 85", True, 0.85),  # above 10 out of a hundred,
        ("Score: 12/10", True, 1.0),  # and out of range is clamped
        ("Score: 250", True, 1.0),
        ("Score: -0.3", False, 0.0),
        ("Score: 4/0", False, 0.0),
        ("Yes", True, 1.0),
        ("No, it's wrong.", False, 0.0),
        ("The answer is correct.", True, 1.0),
        ("It isn't correct: 3 + 4 is 7.", False, 0.0),
        ("8 is wrong; the correct answer is 7", False, 0.0),
        ("The correct answer is 7, so this is wrong", False, 0.0),
        ("Verdict: correct\nScore: 0.2", True, 0.2),  # both kept as given
    ],
)
def test_verdicts_and_scores(text: str, verdict: bool, score: float) -> None:
    parsed = parse_verdict(text)
    assert parsed.error is None
    assert parsed.value.verdict is verdict
    assert parsed.value.score == pytest.approx(score)


def test_unreadable_verdict_fails_safe() -> None:
    parsed = parse_verdict("3 + 4 = 7")
    assert (parsed.value.verdict, parsed.value.score) == (False, 0.0)
    assert parsed.error is not None
    assert "Verdict: correct" in parsed.error and "'3 + 4 = 7'" in parsed.error


@pytest.mark.parametrize(
    ("text", "expected", "error"),
    [
        ("easy", "easy", None),
        ("**Hard**", "hard", None),
        ("Difficulty: easy", "easy", None),
        ("Decision: HARD. Easy ones are rare.", "hard", None),
        ("It is a one-step sum, so easy.", "easy", None),
        ("Is this easy or hard? Hard.", "hard", None),  # the echoed question is ignored
        ("Not easy, but not hard either", "hard", "ambiguous"),
        ("dunno", "hard", "no option"),
    ],
)
def test_choices(text: str, expected: str, error: str | None) -> None:
    parsed = parse_choice(text, ("easy", "hard"), default="hard")
    assert parsed.value == expected
    assert (parsed.error is None) if error is None else (error in (parsed.error or ""))


def test_choices_among_successor_names() -> None:
    names = ("small-model", "big_model")
    assert parse_choice("Route: Big_Model", names, "small-model").value == "big_model"
    assert parse_choice("use small-model here", names, "big_model").value == "small-model"


@pytest.mark.parametrize(
    ("task", "a", "b"),
    [
        ("math", "1,000", "$1000.00"),
        ("math", "3/4", "0.75"),
        ("multiple_choice", "(b)", "B"),
        ("text", "Paris.", "  paris "),
        ("code", "x = 1  \n\n\ny = 2\n", "x = 1\ny = 2"),
    ],
)
def test_normalized_answers_compare_equal(task: str, a: str, b: str) -> None:
    assert normalize_answer(a, task) == normalize_answer(b, task)  # type: ignore[arg-type]


# ---------------------------------------------------------------- properties

integers = st.integers(min_value=-(10**15), max_value=10**15)


@given(integers)
def test_integers_in_any_dress_are_canonical(n: int) -> None:
    for dressed in (str(n), f"{n:,}", f"{n}.0", f"{n}.000"):
        assert canonical_number(dressed) == str(n)
    if n >= 0:
        assert canonical_number(f"${n:,}.00") == str(n)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-1e6, max_value=1e6))
def test_decimals_are_canonical(d: Decimal) -> None:
    expected = format(d.normalize(), "f")
    expected = "0" if expected in ("-0", "0") else expected
    assert canonical_number(format(d, "f")) == expected


@given(st.text(), integers)
def test_a_final_answer_line_wins(prefix: str, n: int) -> None:
    assert extract_answer(f"{prefix}\nAnswer: {n}", "math").value == str(n)


@given(
    st.sampled_from("ABCDEFGHIJ"),
    st.sampled_from(["Answer: {}", "Answer: ({})", "The answer is {}.", "{})", "({}) 7"]),
    st.booleans(),
)
def test_letters_in_any_dress(letter: str, dress: str, lower: bool) -> None:
    text = dress.format(letter.lower() if lower and "(" in dress else letter)
    assert extract_answer(text, "multiple_choice").value == letter


@given(st.text(alphabet=string.printable.replace("`", "")).map(str.strip).filter(bool))
def test_fenced_code_round_trips(code: str) -> None:
    assert extract_answer(f"Here:\n```python\n{code}\n```\n", "code").value == code


@given(st.text(), st.sampled_from(TASKS))
def test_parsers_never_raise(text: str, task: str) -> None:
    parsed = extract_answer(text, task)  # type: ignore[arg-type]
    assert isinstance(parsed.value, str)
    assert isinstance(normalize_answer(parsed.value, task), str)  # type: ignore[arg-type]
    judged = parse_verdict(text)
    assert 0.0 <= judged.value.score <= 1.0
    assert parse_choice(text, ("easy", "hard"), "hard").value in ("easy", "hard")


# ------------------------------------------------------------------ constrained replies

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 40},
        "answer": {"enum": ["A", "B", "C"]},
        "score": {"type": "number"},
    },
    "required": ["reasoning", "answer", "score"],
}


@pytest.mark.parametrize(
    "text",
    [
        '{"reasoning": "B is bigger", "answer": "B", "score": 0.5}',
        ' \n{"reasoning":"B is bigger","answer":"B","score":0.5}\n',
        '```json\n{"reasoning": "B is bigger", "answer": "B", "score": 0.5}\n```',
    ],
)
def test_json_replies_are_read(text: str) -> None:
    parsed = parse_json_reply(text, ANSWER_SCHEMA)
    assert parsed.error is None
    assert parsed.value == {"reasoning": "B is bigger", "answer": "B", "score": 0.5}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"reasoning": "B is bigger because', "expected a JSON object; saw"),
        ('{"reasoning": "x"} {"answer": "B"}', "expected a complete JSON object (Extra data)"),
        ("[1, 2]", "expected a JSON object; saw"),
        ('{"reasoning": "x", "answer": "B"}', "expected a JSON object with the field 'score'"),
        (
            '{"reasoning": "x", "answer": "D", "score": 1}',
            "expected 'answer' to be one of 'A', 'B', 'C'",
        ),
        ('{"reasoning": "x", "answer": "B", "score": true}', "expected 'score' to be a number"),
        ('{"reasoning": 3, "answer": "B", "score": 1}', "expected 'reasoning' to be a string"),
    ],
)
def test_json_replies_that_are_not_the_object_asked_for(text: str, error: str) -> None:
    parsed = parse_json_reply(text, ANSWER_SCHEMA)
    assert parsed.value is None
    assert parsed.error is not None and parsed.error.startswith(error)


@given(st.text())
def test_json_reading_never_raises(text: str) -> None:
    parsed = parse_json_reply(text, ANSWER_SCHEMA)
    assert (parsed.value is None) == (parsed.error is not None)


@given(st.text(alphabet=string.printable), st.sampled_from(["math", "text"]))
def test_normalizing_is_idempotent(text: str, task: str) -> None:
    once = normalize_answer(text, task)  # type: ignore[arg-type]
    assert normalize_answer(once, task) == once  # type: ignore[arg-type]


def run_alone(role: ag.Role, task: str, reply: str, inputs: list[ag.Message]) -> ag.Message:
    """Run ``role`` on a hand-built context whose model replies ``reply``."""
    kind: ag.TaskKind = task  # type: ignore[assignment]
    ctx = ag.NodeContext(
        "q", node=role.node, spec=role.spec, task=kind, backend=ag.ScriptedBackend(reply)
    )
    # A loop of its own, closed here: pytest-asyncio leaks its loop under @given.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(role.run(ctx, inputs))
    finally:
        loop.close()


@settings(max_examples=50, deadline=None)
@given(st.text().filter(lambda t: t.split() != []), st.sampled_from(TASKS))
def test_roles_record_what_the_parsers_read_in_typed_fields(text: str, task: str) -> None:
    """Whatever the model replies (short of nothing, which the scripted model refuses), a
    role keeps the parser's value and error in its message's typed fields, not in
    ``data``, and does not fail."""
    n = ag.NodeSpec
    proposed = run_alone(Proposer("p", n(role="proposer", model="m")), task, text, [])
    answer = extract_answer(text, task)  # type: ignore[arg-type]
    assert (proposed.answer, proposed.parse_error) == (answer.value, answer.error)

    draft = ag.Message("draft", "proposer", text="x", answer="x")
    verifier = Verifier("v", n(role="verifier", model="m", inputs=("draft",)))
    verified = run_alone(verifier, task, text, [draft])
    judged = parse_verdict(text)
    assert (verified.verdict, verified.score) == (judged.value.verdict, judged.value.score)
    assert verified.parse_error == judged.error
    assert (verified.candidate, verified.answer) == ("draft", "x")

    params = {"mode": "difficulty", "easy": ["a"], "hard": ["b"]}
    routed = run_alone(Router("r", n(role="router", model="m", params=params)), task, text, [])
    choice = parse_choice(text, ("easy", "hard"), default="hard")
    assert (routed.decision, routed.parse_error) == (choice.value, choice.error)
    assert routed.routes == frozenset({"a" if choice.value == "easy" else "b"})
    assert not (proposed.data or verified.data or routed.data)
