"""``ParallelExecutorConfig``: the seed's configuration, with toolgraph's additions."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

__all__ = ["ParallelExecutorConfig"]


@dataclasses.dataclass
class ParallelExecutorConfig:
    """Limits and policies, by the seed's names; every limit is enforced.

    ``max_parallel_calls``: calls running at once (across every execution of the executor).
    ``per_tool_parallel_limits``: per tool name. ``per_resource_parallel_limits``: per
    resource key or kind (``"host"``, ``"host:api.example.com"``). ``default_timeout_ms``: per
    call (0 = none). ``enable_parallel=False`` runs one call at a time in emitted order.
    ``resource_limit_cpu`` / ``resource_limit_memory_mb``: budgets the calls' declared costs
    must fit. ``retry``: ``{"max_attempts": 3, "initial_backoff_ms": 100, ...}`` — only
    idempotent tools are retried. ``fail_fast``: cancel the rest after the first failure.
    """

    max_parallel_calls: int = 5
    per_tool_parallel_limits: Dict[str, int] = dataclasses.field(default_factory=dict)
    default_timeout_ms: int = 30000
    enable_parallel: bool = True
    track_performance: bool = True
    validate_thread_safety: bool = True
    resource_limit_cpu: Optional[float] = None
    resource_limit_memory_mb: Optional[int] = None
    per_resource_parallel_limits: Dict[str, int] = dataclasses.field(default_factory=dict)
    retry: Optional[Dict[str, Any]] = None
    fail_fast: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The configuration as the engine reads it (unset options left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ParallelExecutorConfig":
        """A configuration from the engine's form; keys it does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
