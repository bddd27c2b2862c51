"""``ParallelExecutionResult``: what one execution did and what it measured."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

__all__ = ["ParallelExecutionResult", "CallResult"]

CallResult = Dict[str, Any]
"""One call's result (a dict, in input order): ``id``, ``tool``, ``success``, ``status``
(``ok``, ``error``, ``timeout``, ``skipped``, ``cancelled``, ``interrupted``), ``data`` (the
output when ok), ``error`` (``"Type: message"`` for a Python exception), ``error_kind``,
``error_type``, ``traceback``, ``attempts``, ``queued_ms``, ``started_ms``, ``finished_ms``,
``duration_ms``, ``level``, ``worker``."""


class ParallelExecutionResult:
    """The seed's result fields plus toolgraph's own.

    ``success``: every call ok. ``results``: one dict per call, in call order.
    ``total_time_ms`` / ``parallel_time_ms``: the makespan. ``sequential_time_estimate_ms``:
    the sum of the calls' measured durations (what one after another would have taken).
    ``speedup`` = sequential / makespan. ``critical_path_ms``: the longest chain of
    dependent calls, measured; ``efficiency`` = critical path / makespan (1.0: nothing waited
    that did not have to). ``batches``: the dependency levels with their real start and end.
    ``errors``: one line per call that did not succeed. ``metadata``: counts, the execution
    mode, the recorded execution's id.
    """

    __slots__ = (
        "success",
        "results",
        "total_time_ms",
        "parallel_time_ms",
        "sequential_time_estimate_ms",
        "speedup",
        "critical_path_ms",
        "efficiency",
        "batches",
        "errors",
        "metadata",
    )

    success: bool
    results: List[CallResult]
    total_time_ms: float
    parallel_time_ms: float
    sequential_time_estimate_ms: float
    speedup: float
    critical_path_ms: float
    efficiency: float
    batches: List[Dict[str, Any]]
    errors: List[str]
    metadata: Dict[str, Any]

    def __init__(self, fields: Dict[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, fields[name])

    @property
    def execution_id(self) -> Optional[str]:
        """The id of the recorded execution (``toolgraph show ID``), when recorded."""
        value = self.metadata.get("execution_id")
        return str(value) if value is not None else None

    def __getitem__(self, key: str) -> Any:
        """``result["speedup"]``, as with the seed's dict-shaped consumers."""
        if key not in self.__slots__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, id: str) -> Optional[CallResult]:
        """The result of the call with this id."""
        for r in self.results:
            if r["id"] == id:
                return r
        return None

    def to_dict(self) -> Dict[str, Any]:
        """Every field as plain data (JSON-serializable)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def to_openai_messages(self) -> List[Dict[str, Any]]:
        """One ``{"role": "tool", "tool_call_id", "content"}`` message per call, in order."""
        return [
            {"role": "tool", "tool_call_id": r["id"], "content": content_text(r)}
            for r in self.results
        ]

    def to_anthropic_content(self) -> List[Dict[str, Any]]:
        """One ``tool_result`` block per call, in order (``is_error`` when it failed): the
        ``content`` of the next user message."""
        blocks: List[Dict[str, Any]] = []
        for r in self.results:
            block: Dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": r["id"],
                "content": content_text(r),
            }
            if not r["success"]:
                block["is_error"] = True
            blocks.append(block)
        return blocks

    def __repr__(self) -> str:
        ok = sum(1 for r in self.results if r["success"])
        return (
            f"<ParallelExecutionResult {ok}/{len(self.results)} ok, "
            f"makespan {self.total_time_ms:.1f} ms, speedup {self.speedup:.2f}x>"
        )


def content_text(result: CallResult) -> str:
    """What a model reads for a call: its output (text as is, anything else as JSON), or
    ``"status: error"``."""
    if result["success"]:
        data = result["data"]
        if data is None:
            return ""
        if isinstance(data, str):
            return data
        return json.dumps(data, ensure_ascii=False)
    error = result.get("error")
    return f"{result['status']}: {error}" if error else str(result["status"])
