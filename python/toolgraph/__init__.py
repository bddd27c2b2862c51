"""toolgraph: run the tool calls an LLM emits — in parallel where safe, in order where not.

The seed's API (``ParallelExecutor``, ``ParallelExecutorConfig``, ``execute_parallel``,
``topological_sort``, ``get_performance_stats``, ...) over toolgraph's Rust runtime: real
dependencies (``depends_on``, ``${call_id}`` references, resource hazards), every limit
enforced, honest measurements, and an optional record in SQLite or PostgreSQL.
"""

from ._config import ParallelExecutorConfig
from ._executor import ParallelExecutor
from ._native import InputError, ToolGraphError, __version__
from ._result import CallResult, ParallelExecutionResult
from ._tool import SkillError, Tool, tool

__all__ = [
    "CallResult",
    "InputError",
    "ParallelExecutionResult",
    "ParallelExecutor",
    "ParallelExecutorConfig",
    "SkillError",
    "Tool",
    "ToolGraphError",
    "__version__",
    "tool",
]
