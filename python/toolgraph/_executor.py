"""``ParallelExecutor``: the seed's API over toolgraph's Rust runtime, and the driver that
runs ``async def`` tools on the caller's event loop.

The Rust scheduler (its own threads, never the GIL) decides when each call starts. Calls of
``async def`` tools come to the driver in batches through a ``Run`` handle: one ``take()``
returns every call that became ready since the last look, one ``complete()`` hands back
every answer gathered meanwhile, and the scheduler wakes the loop — one byte on a socket
the loop watches — only when the driver said it had nothing left to do. Each call runs in a
``Task`` of its own, as under ``asyncio.create_task``, started eagerly (its first step
runs at once; a call that never suspends is never scheduled) — ``eager_start`` from Python
3.12; on 3.11 the Task's first step, captured from its constructor, is run at once. Plain ``def`` tools never come here: Rust runs them on worker threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import sys
import traceback
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import _native
from ._config import ParallelExecutorConfig
from ._result import ParallelExecutionResult
from ._tool import Tool, as_tool

__all__ = ["ParallelExecutor"]

_TRANSIENT = (TimeoutError, ConnectionError, asyncio.TimeoutError)


def _error_text(exc: BaseException) -> Tuple[str, bool]:
    """A tool's exception as ``"Type: message"`` and its traceback, and whether a retry may
    help (timeouts and connection errors)."""
    head = type(exc).__name__
    try:
        message = str(exc)
    except BaseException:
        message = "<exception str() failed>"
    if message:
        head = f"{head}: {message}"
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:
        tb = "Traceback (most recent call last):\n  <the traceback could not be formatted>\n"
    if not tb.startswith("Traceback (most recent call last):\n"):
        tb = "Traceback (most recent call last):\n" + tb
    return f"{head}\n\n{tb}", isinstance(exc, _TRANSIENT)


def _to_json(obj: Any) -> Any:
    """Plain data for an object the engine cannot carry as is (models, dataclasses, SDK
    objects, skill results, sets); the object itself when there is nothing plainer."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json", exclude_none=True)
        except TypeError:
            return dump()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    for name in ("to_dict", "dict"):
        method = getattr(obj, name, None)
        if callable(method):
            try:
                return method()
            except TypeError:
                pass
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "__iter__") and not isinstance(obj, (str, bytes)):
        try:
            return list(obj)
        except TypeError:
            pass
    return obj


_HELPERS = (_to_json, _error_text)


_EAGER = sys.version_info >= (3, 12)
# 3.11's C Task schedules its first step through `loop.call_soon`, looked up on the loop
# object: the driver can run that step at once instead (see `_Driver._eager_task`).
_STEP_NOW_311 = sys.version_info[:2] == (3, 11)


def _can_capture(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``call_soon`` can be shadowed on this loop object (not on loops whose class
    takes no attributes, e.g. uvloop's: there calls start as under ``create_task``)."""
    try:
        loop.call_soon = loop.call_soon  # type: ignore[method-assign]
        del loop.call_soon
    except (AttributeError, TypeError):
        return False
    return True




async def _awaited(awaitable: Any) -> Any:
    """A tool that returned an awaitable without being ``async def`` (a wrapper): its value."""
    if not inspect.isawaitable(awaitable):
        raise TypeError(
            f"the async tool returned {type(awaitable).__name__}, not a coroutine or awaitable"
        )
    return await awaitable


def _failure(token: int, exc: BaseException) -> Tuple[int, int, Any]:
    text, transient = _error_text(exc)
    return (token, 2 if transient else 1, text)


def _answer_of(token: int, task: "asyncio.Task[Any]") -> Tuple[int, int, Any]:
    """A finished task's answer: its value, or its exception as an error text."""
    try:
        exc = task.exception()  # not result(): re-raising would add frames to the traceback
    except asyncio.CancelledError:
        return (token, 1, "CancelledError: the tool's task was cancelled")
    if exc is None:
        return (token, 0, task.result())
    return _failure(token, exc)


class _Driver:
    """Runs one execution's ``async def`` calls on the current event loop."""

    def __init__(self, run: Any, funcs: List[Callable[..., Any]], loop: asyncio.AbstractEventLoop):
        self._run = run
        self._funcs = funcs
        self._loop = loop
        self._tasks: Dict[int, "asyncio.Task[Any]"] = {}
        self._answers: List[Tuple[int, int, Any]] = []
        self._flush_pending = False
        self._ended: "asyncio.Future[None]" = loop.create_future()
        self._captured: List[Tuple[Callable[..., Any], Tuple[Any, ...], Any]] = []
        self._step_now = _STEP_NOW_311 and _can_capture(loop)
        self._fd = run.wake_fd()
        loop.add_reader(self._fd, self._on_wake)
        self._reading = True

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False

    async def wait(self) -> None:
        # Calls start from loop callbacks, never inside the caller's task (an eagerly
        # stepped task cannot be entered while another one runs).
        self._loop.call_soon(self._pump)
        await self._ended

    def cancel_tasks(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    def _on_wake(self) -> None:
        try:
            os.read(self._fd, 4096)
        except (BlockingIOError, InterruptedError):
            pass
        self._pump()

    def _pump(self) -> None:
        run = self._run
        while True:
            jobs, cancels, done = run.take()
            for token in cancels:
                task = self._tasks.pop(token, None)
                if task is not None:
                    task.cancel()
            for token, tool, args in jobs:
                self._start(token, self._funcs[tool], args)
            if self._answers:
                answers, self._answers = self._answers, []
                run.complete(answers)
                continue
            if done:
                self.close()
                if not self._ended.done():
                    self._ended.set_result(None)
                return
            if not jobs and not cancels:
                return

    def _start(self, token: int, func: Callable[..., Any], args: Dict[str, Any]) -> None:
        try:
            coro = func(**args)
            if not asyncio.iscoroutine(coro):
                coro = _awaited(coro)
            task = self._new_task(coro)
        except BaseException as exc:  # the tool's own failure, whatever it is
            self._answers.append(_failure(token, exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            return
        if task.done():
            self._answers.append(_answer_of(token, task))
            return
        self._tasks[token] = task
        task.add_done_callback(functools.partial(self._on_done, token))

    def _new_task(self, coro: Any) -> "asyncio.Task[Any]":
        # Every call runs in a Task of its own (asyncio.timeout, current_task and context
        # variables behave as under create_task), started eagerly: its first step runs now,
        # and a coroutine that finishes without suspending is never scheduled.
        if _EAGER:
            return asyncio.Task(coro, loop=self._loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        if self._step_now:
            return self._eager_task(coro)
        return self._loop.create_task(coro)

    def _eager_task(self, coro: Any) -> "asyncio.Task[Any]":
        """Python 3.11: a Task whose first step runs now, as ``eager_start`` does from 3.12.
        The Task's constructor schedules its first step with ``loop.call_soon``; for the
        length of the constructor that name on this loop object is ``_capture``, and the
        captured step runs at once, in the task's context (the step itself enters the
        task: ``current_task()``, ``asyncio.timeout`` and cancellation work as usual)."""
        loop = self._loop
        captured = self._captured
        loop.call_soon = self._capture  # type: ignore[method-assign,assignment]
        try:
            task = asyncio.Task(coro, loop=loop)
        finally:
            del loop.call_soon
        for callback, args, context in captured:
            if getattr(callback, "__self__", None) is task:
                context.run(callback)  # the task's first step
            else:  # someone else's (a finalizer's, while the constructor ran): as asked
                type(loop).call_soon(loop, callback, *args, context=context)
        captured.clear()
        return task

    def _capture(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> None:
        self._captured.append((callback, args, context))

    def _on_done(self, token: int, task: "asyncio.Task[Any]") -> None:
        if self._tasks.pop(token, None) is None:
            return  # cancelled on the scheduler's word: it no longer waits for an answer
        self._answers.append(_answer_of(token, task))
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._ended.done():
            self._pump()


Skills = Union[Mapping[str, Any], Iterable[Tool]]


class ParallelExecutor:
    """Runs the tool calls an LLM emitted — in parallel where safe, in order where not.

    ``skills``: ``{name: tool}`` (functions, ``@tool`` functions, objects with
    ``.execute(**kwargs)``) or a list of ``Tool``s. ``config``: limits and policies.
    ``db``: record every execution into a store (``sqlite:///agent.db``,
    ``postgres://...``); off by default. One executor's limits hold across every execution
    it runs at once.
    """

    def __init__(
        self,
        skills: Optional[Skills] = None,
        config: Optional[ParallelExecutorConfig] = None,
        db: Optional[str] = None,
        *,
        db_manager: Any = None,
        _config_file: Optional[str] = None,
        _from_config: bool = False,
    ) -> None:
        if db is None and isinstance(db_manager, str):
            db = db_manager  # the seed passed its database as db_manager
        self._tools = _tools_of(skills)
        self._funcs: List[Callable[..., Any]] = []
        definitions = []
        for t in self._tools:
            definition = t.definition()
            definitions.append(definition)
            self._funcs.append(definition["func"])
        given = config.to_dict() if config is not None else None
        if given is None and not _from_config:
            given = ParallelExecutorConfig().to_dict()
        self._engine = _native.Engine(
            definitions,
            _HELPERS,
            given,
            db,
            _config_file,
            _from_config,
        )

    @classmethod
    def from_config(
        cls,
        path: Optional[str] = None,
        skills: Optional[Skills] = None,
        config: Optional[ParallelExecutorConfig] = None,
        db: Optional[str] = None,
    ) -> "ParallelExecutor":
        """An executor as ``toolgraph run`` builds one from ``toolgraph.toml`` (``path``, else
        ``TOOLGRAPH_CONFIG``, else ``./toolgraph.toml``, then the ``TOOLGRAPH_*`` variables):
        the built-in tools, the configured MCP servers and store, plus ``skills``. ``config``
        replaces the file's ``[executor]`` options it sets."""
        return cls(skills, config, db, _config_file=path, _from_config=True)

    @property
    def config(self) -> ParallelExecutorConfig:
        """The live configuration."""
        return ParallelExecutorConfig.from_dict(self._engine.config())

    @property
    def store(self) -> Optional[str]:
        """Where executions are recorded, or None."""
        result: Optional[str] = self._engine.store()
        return result

    async def execute_parallel(
        self,
        tool_calls: Any,
        session_id: Optional[Union[str, int]] = None,
        *,
        max_parallel_calls: Optional[int] = None,
    ) -> ParallelExecutionResult:
        """Runs a batch of tool calls: OpenAI ``tool_calls`` (dicts or SDK objects),
        Anthropic ``tool_use`` blocks, LangChain tool calls, or toolgraph's own shape, with
        ``depends_on`` and ``${call_id}`` references. ``max_parallel_calls`` limits this run
        below the executor's limits. Cancelling the await cancels every call.

        Raises ``InputError`` (a ``ValueError``) naming each bad call before anything runs.
        """
        loop = asyncio.get_running_loop()
        session = None if session_id is None else str(session_id)
        run = self._engine.start(tool_calls, max_parallel_calls, session)
        driver = _Driver(run, self._funcs, loop)
        try:
            try:
                await driver.wait()
            except asyncio.CancelledError:
                run.cancel()
                driver.cancel_tasks()
                await driver.wait()  # the record ends `cancelled`, every call accounted
                raise
        finally:
            driver.close()
        return ParallelExecutionResult(run.result())

    def execute_parallel_sync(
        self,
        tool_calls: Any,
        session_id: Optional[Union[str, int]] = None,
        *,
        max_parallel_calls: Optional[int] = None,
    ) -> ParallelExecutionResult:
        """``execute_parallel`` for code without an event loop (``async def`` tools run on
        a loop of its own). Inside a running loop, ``await execute_parallel`` instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "execute_parallel_sync was called inside a running event loop; "
                "use `await executor.execute_parallel(...)` there"
            )
        return asyncio.run(
            self.execute_parallel(tool_calls, session_id, max_parallel_calls=max_parallel_calls)
        )

    # --- the seed's planning API -----------------------------------------------------------

    def identify_independent_calls(self, tool_calls: Any) -> List[int]:
        """Positions of calls with no dependency in or out."""
        return list(self._engine.analyze(tool_calls)["independent"])

    def identify_dependent_calls(self, tool_calls: Any) -> List[int]:
        """Positions of calls with at least one dependency in or out."""
        return list(self._engine.analyze(tool_calls)["dependent"])

    def build_dependency_graph(self, tool_calls: Any) -> List[Dict[str, Any]]:
        """Per call: ``index``, ``id``, ``tool``, ``dependencies`` and ``dependents``
        (positions), as the seed's ``ToolCallInfo`` list; ``analyze`` also gives each edge's
        reason."""
        return list(self._engine.analyze(tool_calls)["calls"])

    def analyze(self, tool_calls: Any) -> Dict[str, Any]:
        """The whole analysis: ``independent``, ``dependent``, ``levels``, ``calls`` and
        ``edges`` (``from``, ``to``, ``reason``: ``depends_on``, a reference, a resource
        hazard)."""
        result: Dict[str, Any] = self._engine.analyze(tool_calls)
        return result

    def topological_sort(self, tool_calls: Any) -> List[List[int]]:
        """Positions by dependency level, e.g. ``[[0, 1, 2], [3, 4], [5]]``. (The scheduler
        does not wait for a level to end: each call starts when its own inputs are ready.)"""
        return [list(level) for level in self._engine.analyze(tool_calls)["levels"]]

    def get_performance_stats(self) -> Dict[str, Any]:
        """``total_executions``, ``avg_speedup``, ``avg_execution_time_ms``,
        ``avg_success_rate``, ``avg_efficiency``, ``total_calls`` and per-tool latency
        percentiles, over this executor's executions."""
        stats: Dict[str, Any] = self._engine.stats()
        return stats

    def update_config(self, **options: Any) -> None:
        """Changes limits and policies of the live executor (``max_parallel_calls=10``, ...);
        running executions apply them at their next call."""
        known = {f.name for f in dataclasses.fields(ParallelExecutorConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"update_config: unknown option(s) {', '.join(unknown)}")
        for name, value in options.items():
            if value is None and name not in ("resource_limit_cpu", "resource_limit_memory_mb"):
                raise ValueError(f"update_config: {name} cannot be None")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"update_config: {name} must not be negative, got {value}")
        self._engine.update_config(options)

    def tool_specs(self, provider: str = "openai") -> List[Dict[str, Any]]:
        """The ``tools=[...]`` list to send a model: ``"openai"`` (function tools) or
        ``"anthropic"`` (``input_schema``)."""
        specs = self._engine.tool_specs()
        if provider == "openai":
            return [
                {
                    "type": "function",
                    "function": {"name": n, "description": d, "parameters": p},
                }
                for n, d, p in specs
            ]
        if provider == "anthropic":
            return [{"name": n, "description": d, "input_schema": p} for n, d, p in specs]
        raise ValueError(f"tool_specs: provider must be 'openai' or 'anthropic', not {provider!r}")


def _tools_of(skills: Optional[Skills]) -> List[Tool]:
    if skills is None:
        return []
    if isinstance(skills, Mapping):
        return [as_tool(str(name), skill) for name, skill in skills.items()]
    tools = []
    for t in skills:
        if isinstance(t, Tool):
            tools.append(t)
        else:
            tools.append(as_tool(getattr(t, "__name__", type(t).__name__), t))
    return tools
