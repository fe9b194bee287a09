"""agentgraph: graphs of collaborating LLM roles, executed as dataflow and tuned per task.

Quick use::

    import agentgraph
    graph = agentgraph.load("examples/quickstart.yaml")
    result = graph.run("What is the capital of Japan?")  # or: await graph.arun(...)
    print(result.answer, result.latency_s, result.tokens, result.cost)
"""

from __future__ import annotations

import json
from typing import Any

from ._cache import CacheMode, CallCache
from ._convert import spec_from_networkx, spec_to_networkx
from ._datasets import load_tasks
from ._errors import (
    AgentGraphError,
    BackendError,
    BackendTimeout,
    BudgetExceeded,
    CacheFileError,
    EmptyCompletion,
    GraphValidationError,
    MissingDependency,
    ModelNotFound,
    NodeTimeout,
    ReplayMiss,
    RunFailed,
    SandboxError,
    TaskError,
    TransientBackendError,
    UpstreamFailed,
)
from ._estimate import Estimate, NodeEstimate, ProfileStore, ameasure_profile
from ._evaluate import Comparison, EvalReport, TaskOutcome, aevaluate, compare
from ._graph import Graph, load, loads
from ._model import (
    BackendBase,
    ChatMessage,
    Completion,
    CompletionRequest,
    ModelBackend,
    OutputConstraint,
    Usage,
    sample_seed,
)
from ._pool import ModelPool
from ._registry import register_backend, register_role
from ._resolve import file_fingerprint, resolve_model_path
from ._result import NodeResult, RunResult, Trace, TraceRecord, read_trace
from ._role import Message, NodeContext, Role
from ._spec import (
    SCHEMA_VERSION,
    Budget,
    Defaults,
    GraphSpec,
    LatencyProfile,
    ModelSpec,
    NodeSpec,
    Price,
    RetryPolicy,
    Sampling,
    TaskKind,
    TimeoutPolicy,
)
from ._tasks import Scored, Task, TaskSet
from ._testing import ReplayBackend, ScriptedBackend
from ._yaml import dumps_spec, load_spec, loads_spec

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "AgentGraphError",
    "BackendBase",
    "BackendError",
    "BackendTimeout",
    "Budget",
    "BudgetExceeded",
    "CacheFileError",
    "CacheMode",
    "CallCache",
    "ChatMessage",
    "Comparison",
    "Completion",
    "CompletionRequest",
    "Defaults",
    "EmptyCompletion",
    "Estimate",
    "EvalReport",
    "Graph",
    "GraphSpec",
    "GraphValidationError",
    "LatencyProfile",
    "Message",
    "MissingDependency",
    "ModelBackend",
    "ModelNotFound",
    "ModelPool",
    "ModelSpec",
    "NodeContext",
    "NodeEstimate",
    "NodeResult",
    "NodeSpec",
    "NodeTimeout",
    "OutputConstraint",
    "Price",
    "ProfileStore",
    "ReplayBackend",
    "ReplayMiss",
    "RetryPolicy",
    "Role",
    "RunFailed",
    "RunResult",
    "Sampling",
    "SandboxError",
    "Scored",
    "ScriptedBackend",
    "Task",
    "TaskError",
    "TaskKind",
    "TaskOutcome",
    "TaskSet",
    "TimeoutPolicy",
    "Trace",
    "TraceRecord",
    "TransientBackendError",
    "UpstreamFailed",
    "Usage",
    "__version__",
    "aevaluate",
    "ameasure_profile",
    "compare",
    "dumps_spec",
    "file_fingerprint",
    "load",
    "load_spec",
    "load_tasks",
    "loads",
    "loads_spec",
    "read_trace",
    "register_backend",
    "register_role",
    "resolve_model_path",
    "sample_seed",
    "schema_json",
    "spec_from_networkx",
    "spec_to_networkx",
]


def schema_json(indent: int | None = 2) -> str:
    """The JSON Schema of the graph document format (``agentgraph/v1``)."""
    schema: dict[str, Any] = GraphSpec.model_json_schema(by_alias=True)
    schema["title"] = "agentgraph graph (agentgraph/v1)"
    return json.dumps(schema, indent=indent)
