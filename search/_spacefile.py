"""Space files (``schema: agentgraph-space/v1``): a model pool and ONE probabilistic graph,
a layered template or a supergraph, read into a :class:`GraphSpace`.

Everything is validated before a single graph is sampled, and every error names the file,
line, column and field, like a graph file's: structure by pydantic, then options,
probabilities, model and role names, edges, and each role's own settings (prompt
placeholders, params), checked against every role a node may take.

Probabilities: a Bernoulli is one number in [0, 1] (0 and 1 fix it: no decision is made);
a categorical is a list of options (uniform), a single option (fixed), or a mapping of
option to probability (summing to 1).

Supergraph repair, applied to the raw decisions (so ``log_prob`` stays the decisions'):
nodes are visited in file order; a node left out, or whose role needs an input when every
candidate input it kept was left out or dropped, is dropped; if the output then has no
input but needs one, it reads every kept node that feeds no other; finally nodes that do
not lead to the output are pruned. Edges only go forward in the file order, so every
sample is a DAG, and the load-time check that some proposer is certain means the output
always has something to read.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from agentgraph import (
    Defaults,
    GraphValidationError,
    ModelSpec,
    NodeSpec,
    RetryPolicy,
    Sampling,
    TaskKind,
    TimeoutPolicy,
)
from agentgraph._errors import validation_error
from agentgraph._registry import roles as role_registry
from agentgraph._spec import options_hint
from agentgraph._yaml import parse, read_text, relocate

from ._space import (
    Build,
    Coerce,
    Decisions,
    GraphSpace,
    Knob,
    Path_,
    Sites,
    When,
)

__all__ = ["SPACE_SCHEMA", "SpaceBudget", "load_space", "loads_space"]

SPACE_SCHEMA = "agentgraph-space/v1"

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")

# role -> (calls a model, needs at least one input). Routers are left out of supergraphs:
# their routes name successors, which only the sampled edges decide.
_ROLES: dict[str, tuple[bool, bool]] = {
    "proposer": (True, False),
    "critic": (True, True),
    "verifier": (True, True),
    "synthesizer": (True, True),
    "vote": (False, True),
    "best_of": (False, True),
    "first_finish": (False, True),
    "select": (False, True),
}
_REFINES = ("debate", "critique")
_AGGREGATORS = ("vote", "synthesizer", "best_of", "first_finish")


# --- the file's structure ----------------------------------------------------------------

_CONFIG = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
# Fields typed Any hold option lists, mappings and probabilities: they are read after
# pydantic by _categorical/_probability, which know the option's own path in the file.


class _Settings(BaseModel):
    """Node settings a role (layered) or a candidate node (supergraph) applies."""

    model_config = _CONFIG
    prompt: str | None = None
    system: str | None = None
    sampling: Sampling = Sampling()
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeout: TimeoutPolicy | None = None
    cache: bool | None = None

    def node_fields(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, include=set(_Settings.model_fields))


class _Candidate(_Settings):
    role: Any
    model: Any = None
    include: Any = 1.0
    inputs: Any = ()


class _Supergraph(BaseModel):
    model_config = _CONFIG
    nodes: dict[str, _Candidate]
    output: str | None = None


class _Cascade(BaseModel):
    model_config = _CONFIG
    include: Any = 0.5
    threshold: Any = 0.7
    verifier: Any = None
    escalate: Any = None


class _LayerModels(BaseModel):
    model_config = _CONFIG
    proposer: Any = None
    critic: Any = None
    synthesizer: Any = None
    verifier: Any = None


class _Layered(BaseModel):
    model_config = _CONFIG
    width: Any = 1
    rounds: Any = 0
    refine: Any = "debate"
    aggregator: Any = "vote"
    cascade: _Cascade | None = None
    models: _LayerModels = _LayerModels()
    roles: dict[str, _Settings] = Field(default_factory=dict)


class SpaceBudget(BaseModel):
    """Per-task limits of a search (means over a minibatch, and the p95 latency); the same
    figures the search objective bounds. Not a hard budget of the sampled graphs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_s: Annotated[float, Field(gt=0)] | None = None
    latency_p95_s: Annotated[float, Field(gt=0)] | None = None
    cost_usd: Annotated[float, Field(gt=0)] | None = None
    tokens: Annotated[float, Field(gt=0)] | None = None

    @property
    def limits(self) -> dict[str, float]:
        """The bounded figures, name -> limit."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class _SpaceFile(BaseModel):
    model_config = _CONFIG
    schema_: Literal["agentgraph-space/v1"] = Field(alias="schema")
    name: str = "space"
    description: str | None = None
    task: TaskKind = "text"
    models: dict[str, ModelSpec]
    defaults: Defaults = Defaults()
    budget: SpaceBudget | None = None
    layered: _Layered | None = None
    supergraph: _Supergraph | None = None


# --- options and probabilities -----------------------------------------------------------


def _error(message: str, path: Path_) -> GraphValidationError:
    return GraphValidationError(message, path=path)


def _probability(value: Any, path: Path_, *, positive: bool = False) -> float:
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float) or not (math.isfinite(value) and 0 <= value <= 1):
        raise _error(f"expected a probability between 0 and 1, got {value!r}", path)
    if positive and value == 0:
        raise _error("probability 0: remove the option instead", path)
    return float(value)


def _categorical(raw: Any, path: Path_, coerce: Coerce) -> dict[Any, float]:
    """Options (labels) -> probabilities, from a list, a single option or a mapping."""
    if isinstance(raw, Mapping):
        entries = [(key, (*path, key), p) for key, p in raw.items()]
    elif isinstance(raw, list):
        entries = [(item, (*path, i), None) for i, item in enumerate(raw)]
    else:
        entries = [(raw, path, None)]
    if not entries:
        raise _error("give at least one option", path)
    given: dict[Any, float | None] = {}
    for key, where, p in entries:
        if isinstance(key, dict | list):
            raise _error(f"an option is a plain value, not {key!r}", where)
        label = coerce(key, where)
        if label in given:
            raise _error(f"option {label!r} is given twice", where)
        given[label] = None if p is None else _probability(p, where, positive=True)
    probs = [p for p in given.values() if p is not None]
    if not probs:
        return {label: 1 / len(given) for label in given}
    if len(probs) < len(given):
        raise _error("give every option a probability, or none (uniform)", path)
    total = math.fsum(probs)
    if abs(total - 1) > 1e-6:
        raise _error(f"the probabilities sum to {total:g}, not 1", path)
    return {label: p / total for label, p in given.items() if p is not None}


def _integer(low: int, what: str) -> Coerce:
    def coerce(value: Any, path: Path_) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _error(f"{what} must be an integer >= {low}, got {value!r}", path)
        return value

    return coerce


def _fraction(what: str) -> Coerce:
    def coerce(value: Any, path: Path_) -> float:
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9.eE+-]+\s*", value):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise _error(f"{what} must be a number between 0 and 1, got {value!r}", path)
        return float(value)

    return coerce


def _name(valid: Sequence[str], kind: str) -> Coerce:
    def coerce(value: Any, path: Path_) -> str:
        if isinstance(value, str) and value in valid:
            return value
        if value == "router" and kind == "roles":
            raise _error(
                "a supergraph cannot hold a router: its routes name successors, which the "
                "sampled edges decide (the layered template's cascade routes); valid roles: "
                + ", ".join(map(repr, valid)),
                path,
            )
        hint = options_hint(kind, valid, str(value))
        raise _error(f"unknown {kind[:-1]} {value!r}; {hint}", path)

    return coerce


def _check_role(
    role: str, settings: Mapping[str, Any], model: str | None, path: Path_, node: str = "node"
) -> None:
    """Build the role once, as a graph would, so that its own checks (prompt
    placeholders, params) fail at load time, located in the space file."""
    cls = role_registry.get(role)
    if cls is None:  # not installed here: the graph will say so when built
        return
    spec = NodeSpec(role=role, model=model, inputs=("input",), **settings)
    try:
        cls(node, spec)
    except GraphValidationError as err:
        rest = err.path[2:] if err.path[:2] == ("nodes", node) else ()
        raise _error(f"as role {role!r}: {err.message}", (*path, *rest)) from None


def _node(role: str, model: str | None, inputs: Sequence[str], settings: Any) -> NodeSpec:
    # Fields left unset stay unset, so the dumped graph file says only what was chosen.
    fields: dict[str, Any] = {"model": model, "inputs": tuple(inputs)}
    return NodeSpec(role=role, **{k: v for k, v in fields.items() if v}, **settings)


def _models(
    sites: Sites, raw: Any, name: str, path: Path_, pool: Sequence[str], when: When = ()
) -> Knob:
    options = _categorical(raw if raw is not None else list(pool), path, _name(pool, "models"))
    return sites.categorical(name, path, options, when)


def _role_settings(
    raw: Mapping[str, _Settings], pool: Sequence[str], path: Path_
) -> dict[str, Any]:
    out = {}
    for role, settings in raw.items():
        _name(list(_ROLES), "roles")(role, (*path, role))
        fields = settings.node_fields()
        _check_role(role, fields, pool[0] if _ROLES[role][0] else None, (*path, role))
        out[role] = fields
    return out


# --- the layered template ----------------------------------------------------------------


def _layered(f: _Layered, pool: Sequence[str], sites: Sites) -> Build:
    at: Path_ = ("layered",)

    def knob(name: str, raw: Any, coerce: Coerce, when: When = ()) -> Knob:
        return sites.categorical(name, (*at, name), _categorical(raw, (*at, name), coerce), when)

    width = knob("width", f.width, _integer(1, "a width"))
    rounds = knob("rounds", f.rounds, _integer(0, "a number of rounds"))
    refine = knob(
        "refine", f.refine, _name(_REFINES, "refinements"), [(rounds, set(rounds.labels) - {0})]
    )
    aggregator = knob(
        "aggregator",
        f.aggregator,
        _name(_AGGREGATORS, "aggregators"),
        [(width, set(width.labels) - {1})],
    )
    c = f.cascade if f.cascade is not None else _Cascade(include=0.0)
    cat: Path_ = (*at, "cascade")
    cascade = sites.bernoulli(
        "cascade.include", (*cat, "include"), _probability(c.include, (*cat, "include"))
    )
    on = [(cascade, {True})]
    threshold = sites.categorical(
        "cascade.threshold",
        (*cat, "threshold"),
        _categorical(c.threshold, (*cat, "threshold"), _fraction("a threshold")),
        on,
    )
    mat: Path_ = (*at, "models")
    m = f.models
    proposer = _models(sites, m.proposer, "models.proposer", (*mat, "proposer"), pool)
    critic = _models(
        sites, m.critic, "models.critic", (*mat, "critic"), pool, [(refine, {"critique"})]
    )
    synthesizer = _models(
        sites,
        m.synthesizer,
        "models.synthesizer",
        (*mat, "synthesizer"),
        pool,
        [(aggregator, {"synthesizer"})],
    )
    verifier = _models(
        sites, m.verifier, "models.verifier", (*mat, "verifier"), pool, [(aggregator, {"best_of"})]
    )
    check = _models(sites, c.verifier, "cascade.verifier", (*cat, "verifier"), pool, on)
    escalate = _models(sites, c.escalate, "cascade.escalate", (*cat, "escalate"), pool, on)
    settings = _role_settings(f.roles, pool, (*at, "roles"))

    def build(d: Decisions) -> tuple[dict[str, NodeSpec], str]:
        nodes: dict[str, NodeSpec] = {}

        def add(name: str, role: str, model: str | None, inputs: Sequence[str]) -> str:
            nodes[name] = _node(role, model, inputs, settings.get(role, {}))
            return name

        w, mp = width.read(d), proposer.read(d)
        layer = [add(f"propose_{i}", "proposer", mp, ()) for i in range(1, w + 1)]
        style = refine.read(d)
        for r in range(1, rounds.read(d) + 1):
            if style == "debate":  # each agent reads its own answer first, then the others'
                layer = [
                    add(f"debate{r}_{i}", "proposer", mp, [p, *(q for q in layer if q != p)])
                    for i, p in enumerate(layer, 1)
                ]
            else:  # a critic per answer, and a proposer revising with the critique in view
                crits = [
                    add(f"critic{r}_{i}", "critic", critic.read(d), [p])
                    for i, p in enumerate(layer, 1)
                ]
                layer = [add(f"revise{r}_{i}", "proposer", mp, [c]) for i, c in enumerate(crits, 1)]
        answer = layer[0]
        agg = aggregator.read(d) if w > 1 else None
        if agg == "best_of":
            judged = [
                add(f"verify_{i}", "verifier", verifier.read(d), [p])
                for i, p in enumerate(layer, 1)
            ]
            answer = add("best_of", "best_of", None, judged)
        elif agg == "synthesizer":
            answer = add("synthesize", "synthesizer", synthesizer.read(d), layer)
        elif agg is not None:
            answer = add(agg, agg, None, layer)
        if not cascade.read(d):
            return nodes, answer
        add("check", "verifier", check.read(d), [answer])
        gate = {"mode": "score", "threshold": threshold.read(d), "pass": ["final"]}
        nodes["gate"] = _node("router", None, ["check"], {"params": {**gate, "fail": ["escalate"]}})
        add("escalate", "proposer", escalate.read(d), ["gate"])
        return nodes, add("final", "select", None, ["gate", "escalate"])

    return build


# --- the supergraph ----------------------------------------------------------------------


def _inputs(raw: Any, path: Path_) -> list[tuple[Any, Path_, float]]:
    if isinstance(raw, Mapping):
        return [(u, (*path, u), _probability(p, (*path, u), positive=True)) for u, p in raw.items()]
    if isinstance(raw, list | tuple):
        return [(u, (*path, i), 1.0) for i, u in enumerate(raw)]
    return [(raw, path, 1.0)]


def _supergraph(f: _Supergraph, pool: Sequence[str], sites: Sites) -> Build:
    at: Path_ = ("supergraph", "nodes")
    names = list(f.nodes)
    if not names:
        raise _error("a supergraph needs at least one node", at)
    for n in names:
        if not _ID.match(n):
            raise _error(
                f"invalid name {n!r}: use letters, digits, '_' or '-', not starting with a digit",
                (*at, n),
            )
    output = f.output if f.output is not None else names[-1]
    if output not in f.nodes:
        raise _error(
            f"unknown node {output!r}; {options_hint('nodes', names, output)}",
            ("supergraph", "output"),
        )
    if output != names[-1]:
        raise _error(
            f"the output node {output!r} must come last: edges only go forward in the node "
            "order, so nodes after it could never reach it",
            ("supergraph", "output"),
        )
    include: dict[str, Knob] = {}
    role: dict[str, Knob] = {}
    model: dict[str, Knob] = {}
    edges: dict[str, dict[str, Knob]] = {}
    settings: dict[str, dict[str, Any]] = {}
    certain: list[str] = []  # nodes always present that need no input
    for i, n in enumerate(names):
        c, here = f.nodes[n], (*at, n)
        roles = _categorical(c.role, (*here, "role"), _name(list(_ROLES), "roles"))
        p = _probability(c.include, (*here, "include"))
        if n == output and p != 1:
            raise _error("the output node is always included; remove 'include'", (*here, "include"))
        if p == 1 and not any(_ROLES[r][1] for r in roles) and n != output:
            certain.append(n)
        include[n] = sites.bernoulli(f"nodes.{n}.include", (*here, "include"), p)
        present = [(include[n], {True})]
        role[n] = sites.categorical(f"nodes.{n}.role", (*here, "role"), roles, present)
        llm = {r for r in roles if _ROLES[r][0]}
        if llm:
            at_model = (*here, "model")
            model[n] = _models(
                sites, c.model, f"nodes.{n}.model", at_model, pool, [*present, (role[n], llm)]
            )
        elif c.model is not None:
            raise _error(
                f"no role of node {n!r} calls a model ({', '.join(roles)}); remove 'model'",
                (*here, "model"),
            )
        edges[n] = {}
        for u, where, q in _inputs(c.inputs, (*here, "inputs")):
            if u not in f.nodes:
                hint = options_hint("inputs", names[:i], str(u))
                raise _error(f"unknown node {u!r}; {hint}", where)
            if u == n:
                raise _error(f"node {n!r} lists itself as an input", where)
            if names.index(u) > i:
                raise _error(
                    f"backward edge {u!r} -> {n!r}: {u!r} comes after {n!r} in the node "
                    "order; inputs must come earlier, so that every sample is a DAG; "
                    + options_hint("inputs", names[:i], str(u)),
                    where,
                )
            if u in edges[n]:
                raise _error(f"input {u!r} is listed twice", where)
            edges[n][u] = sites.bernoulli(
                f"nodes.{n}.inputs.{u}", where, q, [(include[u], {True}), *present]
            )
        settings[n] = c.node_fields()
        for r in roles:
            _check_role(r, settings[n], pool[0] if _ROLES[r][0] else None, here, node=n)
    needy = [r for r in role[output].labels if _ROLES[r][1]]
    if needy and not certain:
        raise _error(
            f"the output node {output!r} may be a {needy[0]!r}, which needs an input, but "
            "every other node may be left out or need inputs itself: make one proposer "
            "certain (include: 1) so that every sample has an answer to build on",
            (*at, output, "role"),
        )

    def build(d: Decisions) -> tuple[dict[str, NodeSpec], str]:
        kept: dict[str, list[str]] = {}
        took: dict[str, str] = {}
        for n in names:
            if not include[n].read(d):
                continue
            r = role[n].read(d)
            ins = [u for u, edge in edges[n].items() if u in kept and edge.read(d)]
            if _ROLES[r][1] and not ins and n != output:
                continue  # every input it needs was left out
            kept[n], took[n] = ins, r
        if _ROLES[took[output]][1] and not kept[output]:
            fed = {u for ins in kept.values() for u in ins}
            kept[output] = [u for u in kept if u != output and u not in fed]
        reach = {output}
        for n in reversed(names):
            if n in reach:
                reach.update(kept[n])
        return {
            n: _node(
                took[n], model[n].read(d) if _ROLES[took[n]][0] else None, kept[n], settings[n]
            )
            for n in names
            if n in reach
        }, output

    return build


# --- loading -----------------------------------------------------------------------------


def load_space(path: str | Path) -> GraphSpace:
    """Read and validate a space file; relative model paths resolve against its folder."""
    text = read_text(path, "space file")
    return loads_space(text, source=str(path), base_dir=Path(path).parent)


def loads_space(
    text: str, *, source: str = "<string>", base_dir: str | Path | None = None
) -> GraphSpace:
    """A space from YAML text; errors are located at ``source``:line:column and field."""
    data, positions = parse(text, source)
    try:
        return _compile(data, source, base_dir)
    except GraphValidationError as err:
        if err.source is not None:
            raise
        raise relocate(err, source, positions) from None


def _compile(data: Any, source: str, base_dir: str | Path | None) -> GraphSpace:
    if not isinstance(data, Mapping):
        raise _error("a space document must be a mapping", ())
    try:
        f = _SpaceFile.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, _SpaceFile) from None
    if not f.models:
        raise _error("a space needs at least one model in its pool", ("models",))
    for name in f.models:
        if not _ID.match(name):
            raise _error(
                f"invalid name {name!r}: use letters, digits, '_' or '-', not starting with "
                "a digit",
                ("models", name),
            )
    if (f.layered is None) == (f.supergraph is None):
        why = "both" if f.layered is not None else "neither"
        raise _error(
            f"a space holds exactly one of 'layered' and 'supergraph' (this one has {why})",
            ("supergraph",) if f.supergraph is not None else (),
        )
    pool, sites = list(f.models), Sites()
    if f.layered is not None:
        form, build = "layered", _layered(f.layered, pool, sites)
    else:
        assert f.supergraph is not None
        form, build = "supergraph", _supergraph(f.supergraph, pool, sites)
    return GraphSpace(
        name=f.name,
        form=form,
        sites=sites.sites,
        build=build,
        models=f.models,
        task=f.task,
        defaults=f.defaults,
        budget=f.budget,
        description=f.description,
        source=source,
        base_dir=base_dir,
    )
