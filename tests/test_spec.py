"""Graph documents: validation errors name file, line, column, field and valid options."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import agentgraph as ag

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

GOOD = """\
schema: agentgraph/v1
name: t
models:
  fake:
    backend: scripted
    options: {responses: ["Answer: 1"]}
nodes:
  a:
    role: proposer
    model: fake
  b:
    role: proposer
    model: fake
  c:
    role: synthesizer
    model: fake
    inputs: [a, b]
output: c
"""


def error_for(text: str) -> ag.GraphValidationError:
    with pytest.raises(ag.GraphValidationError) as info:
        ag.loads(text, source="g.yaml")
    return info.value


def test_good_document_builds() -> None:
    graph = ag.loads(GOOD)
    assert list(graph.spec.nodes) == ["a", "b", "c"]
    assert graph.spec.nodes["c"].inputs == ("a", "b")


@pytest.mark.parametrize(
    ("old", "new", "field", "line", "needles"),
    [
        (
            "    model: fake\n    inputs",
            "    model: fak\n    inputs",
            "nodes.c.model",
            16,
            ["unknown model 'fak'", "valid models: 'fake'", "did you mean 'fake'"],
        ),
        (
            "[a, b]",
            "[a, x]",
            "nodes.c.inputs[1]",
            17,
            ["unknown node 'x'", "valid nodes: 'a', 'b'"],
        ),
        ("output: c", "output: d", "output", 18, ["'d' is not defined", "'a', 'b', 'c'"]),
        (
            "role: synthesizer",
            "role: synth",
            "nodes.c.role",
            15,
            ["unknown role 'synth'", "'proposer'", "'synthesizer'"],
        ),
        (
            "  b:\n    role: proposer\n    model: fake\n",
            "  b:\n    role: proposer\n    model: fake\n    inputs: [c]\n",
            "nodes.b.inputs[0]",
            14,
            ["cycle", "c -> b -> c"],
        ),
        ("models:", "modles:", "modles", 3, ["unknown field 'modles'", "valid fields:", "models"]),
        (
            "  a:\n    role: proposer",
            "  a:\n    rolle: proposer",
            "nodes.a.rolle",
            9,
            ["unknown field 'rolle'", "role, model, inputs"],
        ),
        ("schema: agentgraph/v1", "schema: agentgraph/v2", "schema", 1, ["'agentgraph/v1'"]),
        ("  c:\n", "  a:\n", "nodes.a", 14, ["duplicate key 'a'"]),
        (
            "backend: scripted",
            "backend: scriptd",
            "models.fake.backend",
            5,
            ["unknown backend 'scriptd'", "'scripted'", "'llama_cpp'"],
        ),
        (
            "  a:\n    role: proposer\n    model: fake\n",
            "  a:\n    role: proposer\n",
            "nodes.a",
            8,
            ["needs a model"],
        ),
        (
            "  b:\n    role: proposer\n    model: fake\n",
            "  b:\n    role: proposer\n    model: fake\n    prompt: 'Q: {questoin}'\n",
            "nodes.b.prompt",
            14,
            ["unknown placeholder {questoin}", "{question}"],
        ),
        (
            "  c:\n",
            "  d:\n    role: proposer\n    model: fake\n  c:\n",
            "nodes.d",
            14,
            ["does not lead to the output node 'c'"],
        ),
        (
            "    model: fake\n    inputs",
            "    model: fake\n    sampling: {temperature: -1}\n    inputs",
            "nodes.c.sampling.temperature",
            17,
            ["greater than or equal to 0", "got -1"],
        ),
    ],
)
def test_errors_are_located(old: str, new: str, field: str, line: int, needles: list[str]) -> None:
    assert old in GOOD
    err = error_for(GOOD.replace(old, new, 1))
    assert err.field == field
    assert err.source == "g.yaml"
    assert err.line == line, str(err)
    assert err.column is not None
    text = str(err)
    assert text.startswith(f"g.yaml:{line}:{err.column}: {field}: ")
    for needle in needles:
        assert needle in text
    assert isinstance(err, ValueError)


def test_yaml_syntax_error_has_position() -> None:
    err = error_for("schema: agentgraph/v1\nnodes: [a,\n")
    assert err.line is not None and err.line >= 2
    assert "invalid YAML" in str(err)


def test_only_safe_yaml_is_accepted() -> None:
    err = error_for("!!python/object/apply:os.system ['true']\n")
    assert "invalid YAML" in str(err)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ag.GraphValidationError, match="graph file not found") as info:
        ag.load(tmp_path / "nope.yaml")
    assert info.value.source == str(tmp_path / "nope.yaml")


def test_empty_and_non_mapping_documents() -> None:
    assert "empty" in str(error_for(""))
    assert "must be a mapping" in str(error_for("- a\n- b\n"))


def test_backend_option_errors_are_located() -> None:
    text = GOOD.replace('options: {responses: ["Answer: 1"]}', "options: {respones: [x]}")
    err = error_for(text)
    assert err.field == "models.fake.options.respones"
    assert err.line == 6
    assert "valid options: 'responses', 'latency_s'" in str(err)


@pytest.mark.parametrize("value", ["true", ".nan", ".inf", "-1", "soon"])
def test_scripted_latency_must_be_a_finite_number(value: str) -> None:
    text = GOOD.replace(
        'options: {responses: ["Answer: 1"]}', f'options: {{responses: ["x"], latency_s: {value}}}'
    )
    err = error_for(text)
    assert err.field == "models.fake.options.latency_s" and "finite number >= 0" in str(err)


def test_python_construction_rejects_cycles_and_unknown_names() -> None:
    with pytest.raises(ValueError, match="cycle"):
        ag.GraphSpec(
            nodes={
                "a": ag.NodeSpec(role="proposer", inputs=("b",)),
                "b": ag.NodeSpec(role="proposer", inputs=("a",)),
            },
            output="a",
        )
    with pytest.raises(ValueError, match="unknown model"):
        ag.GraphSpec(nodes={"a": ag.NodeSpec(role="proposer", model="m")}, output="a")


def test_sampling_inherits_unset_fields_and_explicit_none_overrides() -> None:
    base = ag.Sampling(temperature=0.7, seed=3, max_tokens=10)
    node = ag.Sampling(temperature=0.1, seed=None)
    merged = node.over(base)
    assert merged.temperature == 0.1
    assert merged.seed is None  # explicitly set: overrides the default seed
    assert merged.max_tokens == 10  # unset: inherited
    assert ag.Sampling().over(base) is base


def test_node_settings_resolve_against_defaults() -> None:
    graph = ag.loads(
        GOOD.replace(
            "output: c",
            "output: c\ndefaults:\n  sampling: {max_tokens: 7, seed: 1}\n"
            "  retry: {max_attempts: 5, backoff_s: 0}\n",
        ).replace(
            "    inputs: [a, b]",
            "    inputs: [a, b]\n    sampling: {seed: 2}\n    retry: {max_attempts: 2}",
        )
    )
    c = graph._nodes["c"]
    assert (c.sampling.max_tokens, c.sampling.seed) == (7, 2)
    assert (c.retry.max_attempts, c.retry.backoff_s) == (2, 0)
    a = graph._nodes["a"]
    assert (a.sampling.seed, a.retry.max_attempts) == (1, 5)


def test_json_schema_validates_the_examples() -> None:
    schema = json.loads(ag.schema_json())
    assert schema["properties"]["schema"]["const"] == "agentgraph/v1"
    validator = jsonschema.Draft202012Validator(schema)
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        validator.validate(yaml.safe_load(path.read_text()))
    bad = yaml.safe_load(GOOD)
    bad["nodes"]["a"]["colour"] = "red"
    assert not validator.is_valid(bad)


@pytest.mark.parametrize("name", ["a\n", "node\n", "x\r\n"])
def test_a_name_with_a_trailing_newline_is_refused(name: str) -> None:
    doc = {
        "models": {"m": {"backend": "scripted"}},
        "nodes": {name: {"role": "proposer", "model": "m"}},
        "output": name,
    }
    with pytest.raises(ag.GraphValidationError, match="invalid name"):
        ag.loads_spec(json.dumps(doc))  # JSON is YAML


def test_retry_delays_stay_capped_for_any_attempt_or_multiplier() -> None:
    for policy in (
        ag.RetryPolicy(max_attempts=2000),
        ag.RetryPolicy(multiplier=1e300, max_backoff_s=3.0),
    ):
        delays = [policy.delay(a, 0.0) for a in (1, 2, 50, 1999, 10**6)]
        assert delays[0] == policy.backoff_s and max(delays) == policy.max_backoff_s
    assert ag.RetryPolicy(backoff_s=0.0, multiplier=1e300).delay(5000, 0.5) == 0.0
    assert ag.RetryPolicy().delay(3, 0.0) == 1.0  # 0.25 * 2 ** 2, exactly as before
