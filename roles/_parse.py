"""Pure parsers from model text to answers, verdicts and routing decisions.

Small models rarely follow a format exactly, so every parser tries the requested format
first, then the common ways of getting it slightly wrong, and finally returns a usable
fallback. A :class:`Parsed` carries the value and, when the format was not found, an
``error`` saying what was expected and what was seen; roles record it in
``Message.parse_error`` instead of failing the node.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Generic, TypeVar

from agentgraph import TaskKind
from agentgraph._scoring import boxed_contents, match_option
from agentgraph._tasks import LETTERS

__all__ = [
    "Judgement",
    "Parsed",
    "canonical_number",
    "extract_answer",
    "normalize_answer",
    "parse_choice",
    "parse_json_reply",
    "parse_verdict",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    value: T
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: bool
    score: float


def _seen(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _expected(what: str, text: str) -> str:
    return f"expected {what}; saw {_seen(text)}"


# "Answer: x", "**Final answer:** x", "#### x" (GSM8K style); the last one wins because
# models often restate the question's format before answering.
_ANSWER_LINE = re.compile(
    r"(?im)^[^\w\n]*(?:final\s+)?answer\W{0,3}?\s*[:=]\s*(.+?)\s*$|^####\s*(.+?)\s*$"
)


def _answer_line(text: str) -> str | None:
    found = [a or b for a, b in _ANSWER_LINE.findall(text)]
    return found[-1].strip(" *_`") if found else None


# ---------------------------------------------------------------------------- numbers

_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_DEC = rf"-?(?:{_INT}(?:\.\d+)?|\.\d+)"
_NUMBER = re.compile(rf"(?<![\w.])\$?\s?({_DEC})(?:\s*/\s*({_DEC}))?\s?%?")
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")


def _to_fraction(num: str, den: str | None) -> Fraction | None:
    try:
        value = Fraction(Decimal(num.replace(",", "")))
        if den is not None:
            d = Fraction(Decimal(den.replace(",", "")))
            if d == 0:
                return None
            value /= d
    except (InvalidOperation, ValueError):
        return None
    return value


def _format(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:  # no terminating decimal: keep it exact
        return f"{value.numerator}/{value.denominator}"
    dec = Decimal(value.numerator) / Decimal(value.denominator)
    return format(dec.normalize(), "f")


def _last_number(text: str) -> str | None:
    text = _FRAC.sub(r"\1/\2", text)
    for match in reversed(list(_NUMBER.finditer(text))):
        value = _to_fraction(match.group(1), match.group(2))
        if value is None:
            continue
        try:
            return _format(value)
        except ValueError:  # more digits than int -> str allows (sys.set_int_max_str_digits)
            continue
    return None


def canonical_number(text: str) -> str | None:
    """The last number in ``text`` in one canonical form ("1,000" and "$1000.00" give
    "1000"; "3/4" and "0.75" give "0.75"; "1/3" stays "1/3"), or None."""
    return _last_number(text)


# Without an "Answer:" line, a stated result beats the last number: small models often
# run on after the result ("3 + 4 = 7. This is because 3 and 4 ...").
_STATED = [
    re.compile(rf"(?i)\b(?:answer|result|total|sum)\s+(?:is|=)\s*:?\s*{_NUMBER.pattern}"),
    re.compile(rf"(?i)(?:\bequals|=)\s*{_NUMBER.pattern}"),
]


def _stated(text: str) -> list[str]:
    out = []
    for pattern in _STATED:
        out += [m.group(0) for m in reversed(list(pattern.finditer(text)))]
    return out


# LaTeX that can stand in a plain number: spacing, escaped $ and %, \frac of numbers.
_NUMERIC_LATEX = re.compile(r"\\[,;!:$%]|\\(?:text|mathrm)\{\s*(?:dollars?|cents?|%)?\s*\}")


def _expression(place: str) -> str | None:
    """``place`` (a boxed answer, an answer line) as a LaTeX expression when it is more
    than a number (``\\frac{\\sqrt{2}}{2}``, ``(1, 2]``): kept as written, since reducing it
    to its last number would change the answer. Of an equation, the right-hand side."""
    place = place.rsplit("=", 1)[-1]
    rest = _NUMERIC_LATEX.sub("", _FRAC.sub(r"\1/\2", place)).strip(" $")
    if "\\" in rest or re.search(r"[A-Za-z]|[(\[].*,.*[)\]]", rest):  # or a tuple, interval
        return " ".join(place.strip(" $").split())
    return None


def _math(text: str) -> Parsed[str]:
    line = _answer_line(text)
    line_boxes = boxed_contents(line) if line is not None else []
    boxes = line_boxes + boxed_contents(text)[::-1]
    for box in boxes[:1]:
        expression = _expression(box)
        if expression is not None:
            return Parsed(expression)
    if line is not None and not boxes and "\\" in line:
        expression = _expression(line)
        if expression is not None:
            return Parsed(expression)
    places = [*line_boxes, *([line] if line is not None else []), *boxes[len(line_boxes) :]]
    for place in [*places, *_stated(text)]:
        number = _last_number(place)
        if number is not None:
            return Parsed(number)
    number = _last_number(text)
    if number is not None:
        return Parsed(number)
    fallback = line if line else text.strip()
    return Parsed(fallback, _expected("a number (a last line 'Answer: <number>')", text))


# -------------------------------------------------------------------- multiple choice

_LETTER = re.compile(
    r"^\W{0,3}?(?i:(?:option|choice|letter)\s+)?"
    r"(?:[(\[]([A-Za-z])[)\]]|([A-Za-z])(?:[).:,*]|\s*$)|([A-Z])\s)"
)
_PHRASE = re.compile(r"(?i)\b(?:answer|option|choice)\s+(?:is|would\s+be|:)\s*:?\s*(.*)")


def _letters(choices: Sequence[str] | None) -> str:
    """The valid option letters: one per choice when they are known, else A-J."""
    return LETTERS[: len(choices)] if choices else LETTERS[:10]


def _letter_at_start(
    text: str, *, loose: bool = True, choices: Sequence[str] | None = None
) -> str | None:
    """The option letter ``text`` starts with. ``loose`` also takes a capital followed by
    a space ("B 7"), which is right after "Answer:" but not at the start of a reply,
    where "I think" and "A dog" are words."""
    match = _LETTER.match(text.strip().lstrip("*_`"))
    if match is None or (match.group(3) and not loose):
        return None
    letter = next(g for g in match.groups() if g).upper()
    return letter if letter in _letters(choices) else None


def _option_named(text: str, choices: Sequence[str] | None) -> str | None:
    """The letter of the one option ``text`` names by its text ("the kilometer")."""
    index = match_option(text, choices) if choices else None
    return LETTERS[index] if index is not None else None


def _multiple_choice(text: str, choices: Sequence[str] | None = None) -> Parsed[str]:
    line = _answer_line(text)
    places = [line] if line is not None else []
    places += boxed_contents(text)[::-1]
    places += [m.group(1) for m in reversed(list(_PHRASE.finditer(text)))]
    for place in places:
        # With the options known, "A kilometer" is the option's text before it is "A".
        letter = (
            _letter_at_start(place, loose=False, choices=choices)
            or _option_named(place, choices)
            or _letter_at_start(place, choices=choices)
        )
        if letter is not None:
            return Parsed(letter)
    letter = _letter_at_start(text, loose=False, choices=choices)
    if letter is not None:
        return Parsed(letter)
    # "I pick (b)." names one option; "(a) 5, (b) 7" lists them and decides nothing.
    marked = {m.upper() for m in re.findall(r"(?<!\w)[(\[]([A-Za-z])[)\]]", text)}
    marked &= set(_letters(choices))
    if len(marked) == 1:
        return Parsed(marked.pop())
    letter = _option_named(text, choices)
    if letter is not None:
        return Parsed(letter)
    fallback = line if line else text.strip()
    valid = _letters(choices)
    what = f"an option letter {valid[0]}-{valid[-1]}" + (" or an option's text" if choices else "")
    return Parsed(fallback, _expected(f"{what} ('Answer: <letter>')", text))


# ------------------------------------------------------------------------ code, text

_FENCE = re.compile(r"```(?:[^\n`]*\n)?(.*?)```", re.S)


def _code(text: str) -> Parsed[str]:
    blocks = _FENCE.findall(text)
    if blocks:
        return Parsed(blocks[-1].strip("\n"))
    start = text.rfind("```")
    if start >= 0:  # cut off by max_tokens before the closing fence
        rest = text[start + 3 :]
        body = rest.split("\n", 1)[1] if "\n" in rest else rest
        return Parsed(body.strip("\n"), _expected("a closed ``` code block", text[start:]))
    return Parsed(text.strip("\n"), _expected("a fenced ```python code block", text))


def _text(text: str) -> Parsed[str]:
    line = _answer_line(text)
    if line:
        return Parsed(line)
    stripped = text.strip()
    return Parsed(stripped, None if stripped else _expected("some text", text))


_EXTRACT = {"math": _math, "code": _code, "text": _text}


def extract_answer(text: str, task: TaskKind, choices: Sequence[str] | None = None) -> Parsed[str]:
    """The final answer in a model's reply, in the form ``task`` asks for: a canonical
    number (math), an upper-case letter (multiple_choice; with ``choices`` known, also an
    option given by its text, and only their letters), the last fenced code block
    (code), or the ``Answer:`` line or whole stripped text (text)."""
    if task == "multiple_choice":
        return _multiple_choice(text, choices)
    return _EXTRACT[task](text)


def normalize_answer(answer: str, task: TaskKind, choices: Sequence[str] | None = None) -> str:
    """A key under which equivalent answers compare equal (used for voting); with
    ``choices``, a multiple-choice answer given by an option's text is keyed by its
    letter."""
    if task == "math":
        number = _last_number(answer)
        if number is not None:
            return number
    elif task == "multiple_choice":
        letter = _letter_at_start(answer, choices=choices) or _option_named(answer, choices)
        if letter is not None:
            return letter
    elif task == "code":
        lines = (line.rstrip() for line in answer.strip().splitlines())
        return "\n".join(line for line in lines if line)
    return " ".join(answer.split()).casefold().rstrip(".! ")


# ---------------------------------------------------------------------------- verdicts

_POSITIVE = frozenset(
    {"correct", "right", "yes", "true", "pass", "passed", "valid", "accept", "accepted", "ok"}
)
_NEGATIVE = frozenset(
    {"incorrect", "wrong", "no", "false", "fail", "failed", "invalid", "reject", "rejected"}
)
_VERDICT_LINE = re.compile(
    r"(?im)^[^\w\n]*(?:verdict|judg(?:e)?ment|decision|correct)\s*[:=]\s*[^\w\n]*(not\s+)?(\w+)"
)
_LEADING = re.compile(r"(?i)^[^\w]*(yes|no)\b")
# "The correct answer is 7" names the right answer, it does not judge the candidate.
_KEYWORD = re.compile(
    r"(?i)\b(?:(not|isn't|is\s+not)\s+)?(incorrect|correct|wrong|right|invalid|valid)\b"
    r"(?!\s+(?:answer|solution|option|choice|value|result|one)\b)"
)
_SCORE_LINE = re.compile(
    r"(?i)\b(?:score|confidence|rating|probability)\s*(?:is\s*)?[:=]?\s*"
    r"(-?\d+(?:\.\d+)?|-?\.\d+)\s*(?:(?:/|out\s+of)\s*(\d+(?:\.\d+)?)|(%))?"
)
_RATIO = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(10|100|5)\b")
_PERCENT = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)\s*%")


def _scale(value: float, out_of: float | None) -> float:
    if out_of is not None:
        value = value / out_of if out_of > 0 else 0.0
    elif value > 10:
        value /= 100  # a bare "85" is a percentage,
    elif value > 1:
        value /= 10  # and a bare "8" is out of ten
    return min(1.0, max(0.0, value))


def _score(text: str) -> float | None:
    match = _SCORE_LINE.search(text)
    if match is not None:
        out_of = float(match.group(2)) if match.group(2) else 100.0 if match.group(3) else None
        return _scale(float(match.group(1)), out_of)
    match = _RATIO.search(text)
    if match is not None:
        return _scale(float(match.group(1)), float(match.group(2)))
    match = _PERCENT.search(text)
    if match is not None:
        return _scale(float(match.group(1)), 100.0)
    return None


def _polarity(word: str, negated: bool) -> bool | None:
    word = word.lower()
    if word in _POSITIVE or word in _NEGATIVE:
        return (word in _POSITIVE) != negated
    return None


def _verdict(text: str) -> bool | None:
    for line in _VERDICT_LINE.finditer(text):
        found = _polarity(line.group(2), bool(line.group(1)))
        if found is not None:
            return found
    leading = _LEADING.match(text)
    if leading is not None:
        return leading.group(1).lower() == "yes"
    # The first judgement usually is the verdict: later ones tend to describe the fix
    # ("8 is wrong; the correct answer is 7").
    keyword = _KEYWORD.search(text)
    if keyword is not None:
        return _polarity(keyword.group(2), bool(keyword.group(1)))
    return None


def parse_verdict(text: str) -> Parsed[Judgement]:
    """A verdict and a score in [0, 1] from a verifier's reply.

    The score comes from "Score: 0.8", "Score: 8/10", "80%" (a bare score above 1 is read
    out of 10, above 10 out of 100; then clamped to [0, 1]); the verdict from
    "Verdict: correct", a leading yes/no, or the first "correct"/"wrong" in the text.
    Either one stands in for the other when missing; with neither, the fallback is a
    failing verdict with score 0, so a cascade escalates rather than accepts.
    """
    verdict, score = _verdict(text), _score(text)
    if verdict is None and score is None:
        what = "'Verdict: correct' or 'Verdict: incorrect' and 'Score: <0 to 1>'"
        return Parsed(Judgement(False, 0.0), _expected(what, text))
    if score is None:
        score = 1.0 if verdict else 0.0
    if verdict is None:
        verdict = score >= 0.5
    return Parsed(Judgement(verdict, score))


# ---------------------------------------------------------------------------- choices

_DECISION_LINE = re.compile(
    r"(?im)^[^\w\n]*(?:decision|answer|route|difficulty|choice|label)\s*[:=]\s*[^\w\n]*([\w-]+)"
)


def parse_choice(text: str, options: Sequence[str], default: str) -> Parsed[str]:
    """One of ``options`` (matched case-insensitively) from a reply: a "Decision: x" line,
    else the first word, else the only option mentioned. When several options are
    mentioned and none is marked, the reply is ambiguous and ``default`` is returned."""
    by_key = {o.casefold(): o for o in options}
    for match in reversed(list(_DECISION_LINE.finditer(text))):
        if match.group(1).casefold() in by_key:
            return Parsed(by_key[match.group(1).casefold()])
    first = re.match(r"[^\w-]*([\w-]+)", text)
    if first is not None and first.group(1).casefold() in by_key:
        return Parsed(by_key[first.group(1).casefold()])
    # Small models often echo the question "easy or hard?" before answering it.
    names = "|".join(re.escape(o) for o in options)
    rest = re.sub(rf"(?i)(?:{names})\s*(?:,|or|/)\s*(?:{names})", " ", text)
    mentioned = [o for o in options if re.search(rf"(?i)(?<![\w-]){re.escape(o)}(?![\w-])", rest)]
    if len(mentioned) == 1:
        return Parsed(mentioned[0])
    listed = " or ".join(repr(o) for o in options)
    why = "ambiguous" if mentioned else "no option"
    return Parsed(default, _expected(f"one of {listed} ({why})", text))


# ------------------------------------------------------------------ constrained replies


def _fits(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` fits one property schema of the kinds the roles write (``enum``,
    ``string`` with ``maxLength``, ``number`` with bounds); the roles' own schemas only,
    so that the package needs no JSON-schema library at run time."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        # Bounds are checked by the caller: a score of 1.2 is clamped, not thrown away.
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    return True


def parse_json_reply(text: str, schema: Mapping[str, Any]) -> Parsed[dict[str, Any] | None]:
    """The object of a reply decoded under the JSON ``schema`` (an object schema with
    ``properties`` and ``required``), or None with an ``error`` when the reply is not such
    an object: cut short by ``max_tokens``, or from a backend that did not apply the
    constraint. Text around the object (a code fence) is tolerated."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return Parsed(None, _expected("a JSON object", text))
    try:
        value = json.loads(text[start : end + 1])
    except ValueError as exc:
        why = str(exc).split(":", 1)[0]
        return Parsed(None, _expected(f"a complete JSON object ({why})", text))
    if not isinstance(value, dict):
        return Parsed(None, _expected("a JSON object", text))
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            return Parsed(None, _expected(f"a JSON object with the field {name!r}", text))
        if not _fits(value[name], properties.get(name, {})):
            allowed = properties.get(name, {})
            what = (
                "one of " + ", ".join(repr(v) for v in allowed["enum"])
                if "enum" in allowed
                else f"a {allowed.get('type', 'value')}"
            )
            return Parsed(None, _expected(f"{name!r} to be {what}", text))
    return Parsed(value)
