"""Bad graph files never crash the loader: every malformed, hostile or damaged document
either loads as a valid spec or raises one located :class:`GraphValidationError`, and no
load stalls.

Hand-made cases cover each class of bad input once seen to escape (control characters,
NUL bytes, impossible dates, unreadable tags, recursive aliases, deep nesting, alias bombs,
binary files, directories, unreadable files, bad replay traces, booleans and non-finite
values for numbers); hypothesis adds damaged copies of the examples (flipped bytes,
truncations, deleted, duplicated and swapped lines, values replaced at random paths) and
documents built from YAML's awkward tokens. Well over a thousand documents per run,
derandomized so CI sees the same ones.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentgraph as ag
from agentgraph import _yaml

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
TEXTS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
BOUND_S = 2.0  # against stalls, not a speed benchmark: a load takes milliseconds


def fuzz(examples: int) -> settings:
    """Hypothesis settings for ``examples`` documents, the same ones on every run."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,  # the time bound is checked per load instead
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


GOOD = """\
schema: agentgraph/v1
name: t
models:
  fake:
    backend: scripted
    options: {responses: ["Answer: 1"]}
defaults:
  sampling:
    max_tokens: 48
    temperature: 0.5
nodes:
  a:
    role: proposer
    model: fake
  b:
    role: synthesizer
    model: fake
    inputs: [a]
output: b
"""


def load(document: str | bytes, tmp: Path | None = None) -> tuple[Any, float]:
    """Load ``document`` (bytes through a file, as a user would), returning the spec or
    the exception, and the seconds it took."""
    start = time.perf_counter()
    try:
        if isinstance(document, bytes):
            assert tmp is not None
            path = tmp / "fuzz.yaml"
            path.write_bytes(document)
            result: Any = ag.load_spec(path)
        else:
            result = ag.loads_spec(document, source="fuzz.yaml")
    except Exception as exc:
        result = exc
    return result, time.perf_counter() - start


def check(result: Any, seconds: float, *, parsed: bool = True) -> None:
    """Only a valid spec or a located GraphValidationError, within the time bound."""
    assert seconds < BOUND_S, f"a load took {seconds:.2f} s"
    if isinstance(result, ag.GraphSpec):
        return
    assert isinstance(result, ag.GraphValidationError), repr(result)
    assert result.source is not None, str(result)
    if parsed:
        assert result.line is not None and result.line >= 1, str(result)
        assert result.column is None or result.column >= 1, str(result)


def refused(document: str, *needles: str) -> ag.GraphValidationError:
    result, seconds = load(document)
    check(result, seconds)
    assert isinstance(result, ag.GraphValidationError), f"accepted: {document[:200]!r}"
    for needle in needles:
        assert needle in str(result), str(result)
    return result


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(params=["libyaml", "python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both event sources: libyaml's parser, and PyYAML's own for when it is missing."""
    if request.param == "libyaml":
        if not getattr(yaml, "__with_libyaml__", False):
            pytest.skip("libyaml is not installed")
    else:
        monkeypatch.setattr(_yaml, "events_from", _yaml._PyEvents)
    yield request.param


def test_the_good_document_and_the_examples_load(parser: str) -> None:
    for text in [GOOD, *TEXTS]:
        result, seconds = load(text)
        assert isinstance(result, ag.GraphSpec), result
        assert seconds < BOUND_S


# --- YAML that PyYAML cannot read: every one located ---------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        ("name: t", "name: t\x07", ["unacceptable character '\\x07'", "fuzz.yaml:2:8"]),
        ("name: t", 'name: "t\x00"', ["'\\x00'", "fuzz.yaml:2:9"]),
        ("name: t", "# \x1b[31m\nname: t", ["'\\x1b'", "fuzz.yaml:2:3"]),
        ("name: t", "name: t\ufffe", ["'\\ufffe'"]),
        ("max_tokens: 48", "max_tokens: !!int abc", ["'abc' is not a valid !!int", ":9:17"]),
        ("max_tokens: 48", "max_tokens: !!int 0x", ["'0x' is not a valid !!int"]),
        ("max_tokens: 48", "max_tokens: " + "9" * 5000, ["is not a valid !!int"]),
        ("temperature: 0.5", "temperature: !!float ''", ["'' is not a valid !!float"]),
        ("temperature: 0.5", "temperature: !!bool maybe", ["'maybe' is not a valid !!bool"]),
        ("name: t", "name: !!timestamp 2020-02-30", ["unsupported tag '!!timestamp'"]),
        ("name: t", "name: !!binary aGVsbG8=", ["unsupported tag '!!binary'"]),
        ("name: t", "name: !!python/name:os.system", ["unsupported tag"]),
        ("name: t", "name: !!set {a, b}", ["unsupported tag '!!set'"]),
        ("name: t", "name: !!omap [a: 1]", ["unsupported tag '!!omap'"]),
        ("name: t", "name: !custom x", ["unsupported tag '!custom'"]),
        ("name: t", "name: !!str [x]", ["unsupported tag '!!str'"]),
        ("name: t", "name: !!map x", ["unsupported tag '!!map'"]),
        ("name: t", "name: [a, ", ["invalid YAML"]),
        ("name: t", "name: 'unterminated", ["invalid YAML"]),
        ("name: t", "name: t\n\tdescription: tab", ["invalid YAML"]),
        ("name: t", "name: *nowhere", ["undefined alias 'nowhere'"]),
        ("name: t", "name: &x t\ndescription: &x u", ["duplicate anchor 'x'"]),
        ("output: b", "output: b\n---\noutput: a", ["expected a single document"]),
        ("  a:\n", "  <<: {role: proposer}\n  a:\n", ["merge keys ('<<') are not supported"]),
        ("  a:\n", "  1.5: {role: proposer}\n  a:\n", ["mapping keys must be strings, got 1.5"]),
        ("  a:\n", "  ~: {role: proposer}\n  a:\n", ["mapping keys must be strings, got None"]),
        ("  a:\n", "  ? [x]\n  : {role: proposer}\n  a:\n", ["mapping keys must be strings"]),
        ("  a:\n", "  a:\n    role: x\n  a:\n", ["duplicate key 'a' in nodes"]),
    ],
)
def test_unreadable_yaml_is_a_located_error(
    parser: str, old: str, new: str, needles: list[str]
) -> None:
    assert old in GOOD
    if parser == "python":  # PyYAML words its syntax errors its own way
        needles = [n for n in needles if "invalid YAML" not in n or n == "invalid YAML"]
    refused(GOOD.replace(old, new, 1), *needles)


@pytest.mark.parametrize("date", ["2020-02-30", "2020-02-03", "2001-12-14t21:59:43.10-05:00"])
def test_dates_are_strings(date: str) -> None:
    spec = ag.loads_spec(GOOD.replace("name: t", f"name: t\ndescription: {date}"))
    assert spec.description == date
    # ... and a name that looks like a date is refused as a name, not as a date
    refused(GOOD.replace("  a:\n", f"  {date}:\n", 1).replace("[a]", f"['{date}']"))


def test_merge_and_value_markers_are_text_where_they_are_values(parser: str) -> None:
    spec = ag.loads_spec(GOOD.replace("name: t", "name: t\ndescription: <<"))
    assert spec.description == "<<"
    spec = ag.loads_spec(GOOD.replace('["Answer: 1"]', "[=, <<]"))
    assert spec.models["fake"].options["responses"] == ["=", "<<"]


def test_empty_documents(parser: str) -> None:
    refused("", "the document is empty")
    refused("# only a comment\n", "the document is empty")
    refused("---\n...\n", "must be a mapping")
    refused("just text\n", "must be a mapping")


# --- aliases and nesting: bounded before anything expands ---------------------------


def laughs(levels: int, width: int = 9) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["top", "options", "params"])
def test_an_alias_bomb_is_refused_at_once(parser: str, where: str) -> None:
    bomb = laughs(9)  # 9 ** 9 lols from 300-odd bytes
    if where == "top":
        text = bomb + GOOD
    else:  # inside a free-form mapping, which no schema checks before it expands
        inner = "".join(f"      {line}\n" for line in bomb.splitlines())
        old = "    options: {" if where == "options" else "    inputs: [a]\n"
        new = f"    {where}:\n{inner}" + ("    x: {" if where == "options" else old)
        text = GOOD.replace(old, new, 1)
        assert text != GOOD
    tracemalloc.start()
    try:
        err = refused(text, "aliases expand to more than 100,000 nodes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.1f} MiB to refuse a bomb"
    assert err.line is not None


def test_a_few_aliases_are_fine_and_keep_their_data_shared(parser: str) -> None:
    text = GOOD.replace(
        "  sampling:\n    max_tokens: 48",
        "  sampling: &s\n    max_tokens: 48",
    ).replace("    model: fake\n    inputs", "    model: fake\n    sampling: *s\n    inputs")
    spec = ag.loads_spec(text)
    assert spec.nodes["b"].sampling == spec.defaults.sampling
    # A block used many times, within the limit: a wide fan of nodes sharing one sampling.
    nodes = "".join(f"  p{i}: {{role: proposer, model: fake, sampling: *s}}\n" for i in range(300))
    fan = text.replace("nodes:\n", "nodes:\n" + nodes).replace(
        "inputs: [a]", "inputs: [a, " + ", ".join(f"p{i}" for i in range(300)) + "]"
    )
    assert len(ag.loads_spec(fan).nodes) == 302


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("a: &a [*a]\n", ["recursive alias *a", "fuzz.yaml:1:8"]),
        ("a: &a {b: *a}\n", ["recursive alias *a"]),
        ("a: &a [[x, [*a]]]\n", ["recursive alias *a"]),
        ("a: " + "[" * 150 + "]" * 150 + "\n", ["deeper than 100 levels"]),
        ("a: " + "{b: " * 150 + "x" + "}" * 150 + "\n", ["deeper than 100 levels"]),
        ("".join(" " * i + f"k{i}:\n" for i in range(150)), ["deeper than 100 levels"]),
        ("".join(" " * i + "-\n" for i in range(150)), ["deeper than 100 levels"]),
        ("a: " + "[" * 100_000 + "\n", ["invalid YAML"]),
        ("- " * 5000 + "x\n", ["deeper than 100 levels"]),
    ],
)
def test_recursion_and_depth_are_located_errors(parser: str, text: str, needles: list[str]) -> None:
    if parser == "python" and "[" * 100_000 in text:
        needles = ["deeper than 100 levels"]  # PyYAML's parser has no depth limit of its own
    refused(text, *needles)


def test_nesting_through_aliases_is_measured(parser: str) -> None:
    # Each anchor nests 60 levels and holds the one before: 600 levels once expanded.
    lines = []
    for i in range(10):
        inner = f"*d{i - 1}" if i else "x"
        lines.append(f"d{i}: &d{i} " + "[" * 60 + inner + "]" * 60)
    refused("\n".join(lines) + "\n", "nests deeper than 100 levels")
    within = "a: &d " + "[" * 40 + "x" + "]" * 40 + "\nb: [*d]\n"
    refused(within, "unknown field 'a'")  # read, then refused by the schema


# --- files that are not YAML text ----------------------------------------------------


def test_binary_files_directories_and_unreadable_files(tmp: Path) -> None:
    cases: list[tuple[Any, str, bool]] = []
    binary = tmp / "binary.yaml"
    binary.write_bytes(b"schema: agentgraph/v1\nname: \xff\xfe\x00\x89PNG\n")
    cases.append((binary, "not UTF-8 text: byte b'\\xff'", True))
    latin = tmp / "latin1.yaml"
    latin.write_bytes(GOOD.replace("name: t", "name: caf\xe9").encode("latin-1"))
    cases.append((latin, "not UTF-8", True))
    cases.append((tmp, "is a directory", False))
    cases.append((tmp / "missing.yaml", "graph file not found", False))
    cases.append((tmp / "nul\x00name.yaml", "cannot read the graph file", False))
    cases.append((tmp / ("x" * 5000 + ".yaml"), "cannot read the graph file", False))
    if sys.platform == "linux":  # readable for everyone, and every read fails (EIO)
        cases.append((Path("/proc/self/mem"), "cannot read the graph file", False))
    for path, needle, parsed in cases:
        start = time.perf_counter()
        with pytest.raises(ag.GraphValidationError) as info:
            ag.load_spec(path)
        check(info.value, time.perf_counter() - start, parsed=parsed)
        assert info.value.source == str(path)
        assert needle in str(info.value), str(info.value)
        with pytest.raises(ag.GraphValidationError):
            ag.load(path)
    with pytest.raises(ag.GraphValidationError) as info:
        ag.load_spec(binary)
    assert (info.value.line, info.value.column) == (2, 7)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(tmp: Path) -> None:
    path = tmp / "secret.yaml"
    path.write_text(GOOD, encoding="utf-8")
    path.chmod(0)
    try:
        with pytest.raises(ag.GraphValidationError, match="permission denied") as info:
            ag.load_spec(path)
    finally:
        path.chmod(0o600)
    assert info.value.source == str(path)


# --- a replay model whose trace file is not a trace -----------------------------------

RECORD = (
    '{"node": "a", "model": "m", "backend": "b", "messages": [{"role": "user", '
    '"content": "q"}], "output": "4", "started_s": 0, "latency_s": 0, "queued_s": 0, '
    '"attempts": 1}'
)


@pytest.mark.parametrize(
    ("content", "line", "needle"),
    [
        (RECORD + "\n{not json\n", 2, "not a trace record"),
        (RECORD + '\n\n{"node": "a"}\n', 3, "missing 'messages'"),
        ("[1, 2]\n", 1, "not a trace record"),
        ('"text"\n', 1, "not a trace record"),
        (RECORD.replace('"4"', "4") + "\n", 1, "'output' must be a string or null"),
        (
            RECORD.replace('"attempts": 1', '"attempts": 1, "prompt_tokens": true') + "\n",
            1,
            "'prompt_tokens' must be a whole number",
        ),
        (
            RECORD.replace('"attempts": 1', '"attempts": 1, "sample_index": Infinity') + "\n",
            1,
            "not a trace record",
        ),
        (RECORD.replace('"user"', '"robot"') + "\n", 1, "bad message"),
        (RECORD.replace("}], ", '}], "request_key": "0", ') + "\n", 1, "request_key"),
        ("[" * 100_000 + "\n", 1, "not a trace record"),
        (b"\xff\xfe{}\n", 1, "not a trace record"),
    ],
)
def test_a_bad_replay_trace_is_located_in_the_trace(
    tmp_path: Path, content: str | bytes, line: int, needle: str
) -> None:
    trace = tmp_path / "t.jsonl"
    if isinstance(content, bytes):
        trace.write_bytes(content)
    else:
        trace.write_text(content, encoding="utf-8")
    graph = tmp_path / "g.yaml"
    graph.write_text(
        "models:\n  r: {backend: replay, path: t.jsonl}\n"
        "nodes:\n  a: {role: proposer, model: r}\noutput: a\n",
        encoding="utf-8",
    )
    with pytest.raises(ag.GraphValidationError) as info:
        ag.load(graph)
    err = info.value
    assert (err.source, err.line, err.field) == (str(trace), line, "models.r.path"), str(err)
    assert needle in str(err) and "model 'r' replays this file" in str(err)


def test_a_good_replay_trace_still_loads(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(RECORD + "\n", encoding="utf-8")
    (tmp_path / "g.yaml").write_text(
        "models:\n  r: {backend: replay, path: t.jsonl}\n"
        "nodes:\n  a: {role: proposer, model: r}\noutput: a\n",
        encoding="utf-8",
    )
    graph = ag.load(tmp_path / "g.yaml")
    assert isinstance(graph.backends["r"], ag.ReplayBackend)


# --- numbers: no booleans, strings, NaN or infinities ---------------------------------


@pytest.mark.parametrize(
    ("old", "new", "field", "needle"),
    [
        ("max_tokens: 48", "max_tokens: true", "defaults.sampling.max_tokens", "boolean True"),
        ("max_tokens: 48", "max_tokens: yes", "defaults.sampling.max_tokens", "boolean True"),
        ("max_tokens: 48", "max_tokens: '48'", "defaults.sampling.max_tokens", "string '48'"),
        ("max_tokens: 48", "max_tokens: .nan", "defaults.sampling.max_tokens", "finite"),
        ("max_tokens: 48", "seed: off", "defaults.sampling.seed", "boolean False"),
        ("temperature: 0.5", "temperature: on", "defaults.sampling.temperature", "boolean"),
        ("temperature: 0.5", "temperature: .nan", "defaults.sampling.temperature", "finite"),
        ("temperature: 0.5", "temperature: .inf", "defaults.sampling.temperature", "finite"),
        ("temperature: 0.5", "top_p: -.inf", "defaults.sampling.top_p", "finite"),
        ("temperature: 0.5", "min_p: .NaN", "defaults.sampling.min_p", "finite"),
        ("temperature: 0.5", "repeat_penalty: .inf", "defaults.sampling.repeat_penalty", "finite"),
        ("temperature: 0.5", "top_k: true", "defaults.sampling.top_k", "boolean"),
        ("  sampling:", "  cache: 1\n  sampling:", "defaults.cache", "valid boolean"),
        (
            "  sampling:",
            "  timeout: {call_s: .inf}\n  sampling:",
            "defaults.timeout.call_s",
            "finite",
        ),
        (
            "  sampling:",
            "  timeout: {node_s: .nan}\n  sampling:",
            "defaults.timeout.node_s",
            "finite",
        ),
        (
            "  sampling:",
            "  timeout: {call_s: true}\n  sampling:",
            "defaults.timeout.call_s",
            "boolean",
        ),
        (
            "  sampling:",
            "  retry: {max_attempts: true}\n  sampling:",
            "defaults.retry.max_attempts",
            "boolean",
        ),
        (
            "  sampling:",
            "  retry: {backoff_s: .inf}\n  sampling:",
            "defaults.retry.backoff_s",
            "finite",
        ),
        (
            "  sampling:",
            "  retry: {multiplier: .nan}\n  sampling:",
            "defaults.retry.multiplier",
            "finite",
        ),
        ("output: b", "output: b\nbudget: {tokens: true}", "budget.tokens", "boolean"),
        ("output: b", "output: b\nbudget: {latency_s: .nan}", "budget.latency_s", "NaN"),
        ("output: b", "output: b\nbudget: {cost_usd: .nan}", "budget.cost_usd", "NaN"),
        ("output: b", "output: b\nbudget: {cost_usd: -.inf}", "budget.cost_usd", "greater"),
        ("output: b", "output: b\nbudget: {tokens: .inf}", "budget.tokens", "finite"),
        (
            "    backend: scripted",
            "    backend: scripted\n    price: {input_per_mtok: .inf}",
            "models.fake.price.input_per_mtok",
            "finite",
        ),
        (
            "    backend: scripted",
            "    backend: scripted\n    slots: true",
            "models.fake.slots",
            "boolean",
        ),
        (
            "    backend: scripted",
            "    backend: scripted\n    profile: {prefill_tok_s: .inf, decode_tok_s: 1}",
            "models.fake.profile.prefill_tok_s",
            "finite",
        ),
        (
            "    backend: scripted",
            "    backend: scripted\n    profile: {prefill_tok_s: 1, decode_tok_s: .nan}",
            "models.fake.profile.decode_tok_s",
            "finite",
        ),
        ("name: t", "nodes: {}\nname: t", "nodes", "duplicate key"),
        ("  b:\n", '  "b\\n":\n', "nodes.b\n", "invalid name"),
    ],
)
def test_numbers_are_numbers(old: str, new: str, field: str, needle: str) -> None:
    assert old in GOOD
    err = refused(GOOD.replace(old, new, 1), needle)
    assert err.field == field, str(err)


def test_numbers_that_are_fine() -> None:
    spec = ag.loads_spec(
        GOOD.replace("max_tokens: 48", "max_tokens: 48.0")
        .replace("temperature: 0.5", "temperature: 1")
        .replace("output: b", "output: b\nbudget: {cost_usd: .inf, tokens: 1000}")
    )
    assert spec.defaults.sampling.max_tokens == 48
    assert spec.defaults.sampling.temperature == 1.0
    assert spec.budget is not None and spec.budget.cost_usd == float("inf")  # no limit
    assert ag.Budget(tokens=1000.0).tokens == 1000  # as the command line passes it


# --- hypothesis: damaged examples and awkward documents -------------------------------


@st.composite
def damaged(draw: st.DrawFn) -> str | bytes:
    """An example document with one kind of damage."""
    text = draw(st.sampled_from([GOOD, *TEXTS]))
    data = text.encode()
    kind = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "swap", "insert"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
        return data
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "insert":
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(st.text(max_size=8)) + text[i:]
    lines = text.splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(j, lines[i])
    else:
        lines[i], lines[j] = lines[j], lines[i]
    return "".join(lines)


@fuzz(1500)
@given(damaged())
def test_damaged_examples(tmp: Path, document: str | bytes) -> None:
    result, seconds = load(document, tmp)
    check(result, seconds)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["", "2020-02-30", "=", "<<", "~", "yes", "0x1F", "1_000", "1:20", ".inf"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, (*prefix, i))


@fuzz(600)
@given(st.sampled_from([GOOD, *TEXTS]), st.data())
def test_values_replaced_at_random_paths(text: str, data: st.DataObject) -> None:
    doc = yaml.safe_load(text)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(paths(doc))))
        value = data.draw(values)
        if not where:
            doc = value
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = value
    result, seconds = load(yaml.safe_dump(doc, allow_unicode=True))
    check(result, seconds)


TOKENS = [
    "&a ",
    "*a",
    "&b ",
    "*b",
    "[",
    "]",
    "{",
    "}",
    ": ",
    ", ",
    "- ",
    "? ",
    "\n",
    "\n  ",
    "  ",
    "'",
    '"',
    "|\n",
    ">-\n",
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "!!int ",
    "!!bool ",
    "!!float ",
    "!!timestamp ",
    "!!binary ",
    "!!python/tuple ",
    "!x ",
    "<<",
    "~",
    "yes",
    ".nan",
    "-.inf",
    "2020-02-30",
    "0o17",
    "1e9",
    "nodes",
    "output",
    "role",
    "model",
    "inputs",
    "a",
    "b",
    "\t",
    "\\",
    "\x00",
    "\x07",
    "\ufeff",
    "\u2028",
    "é",
    "\U0001f600",
]


@fuzz(900)
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=40))
def test_documents_of_awkward_tokens(tokens: list[str]) -> None:
    result, seconds = load("".join(tokens))
    check(result, seconds)
