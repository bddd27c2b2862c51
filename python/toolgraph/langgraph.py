"""LangGraph drop-in for ``langgraph.prebuilt.ToolNode`` that runs the calls through toolgraph.

``ToolGraphNode(tools)`` goes where ``ToolNode(tools)`` went in a ``StateGraph``. It reads the
tool calls of the last ``AIMessage`` (or a list of messages, or a list of tool calls), runs them
with a :class:`toolgraph.ParallelExecutor` -- in parallel where safe, in order where a call's
arguments reference another call's output with ``${call_id}`` -- and returns the
``ToolMessage``\\ s ToolNode would: one per call, in the ``AIMessage``'s order, with the same
``content`` (strings as they are, content blocks as they are, anything else as JSON),
``name``, ``tool_call_id`` and ``status``. A failed call reads
``"Error: <repr(exception)>\\n Please fix your mistakes."`` with ``status="error"``, as in
``ToolNode(handle_tool_errors=True)``; ``handle_tool_errors`` takes the same values as there.
Unlike ToolNode's async path, the run's ``RunnableConfig["max_concurrency"]`` is honoured.

Where it differs from ToolNode: ``handle_tool_errors`` defaults to ``True`` (ToolNode's
default handles only bad arguments and re-raises the rest); a string argument holding
``${...}`` is a reference (``$${`` a literal ``${``); arguments are checked against each
tool's JSON schema before anything runs, and a call toolgraph rejects (bad arguments, a
reference to no call) fails alone with an error ToolMessage -- in ToolNode's words when
LangChain's own validation rejects it too -- while the rest run; ``async``-only tools run in
a sync graph as well. Not carried over: injected arguments (``InjectedState``,
``InjectedStore``, ``ToolRuntime``), ``Command`` returns, artifacts and ``wrap_tool_call``.

This module imports langgraph and langchain-core; the rest of toolgraph does not.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import json
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable, Literal, Union, cast

from langchain_core.messages import AIMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph._internal._runnable import RunnableCallable
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import (
    INVALID_TOOL_NAME_ERROR_TEMPLATE,
    TOOL_CALL_ERROR_TEMPLATE,
    ToolInvocationError,
    msg_content_output,
)
from pydantic import BaseModel, ValidationError

from . import InputError, ParallelExecutor, ParallelExecutorConfig, ToolGraphError, tool

__all__ = ["ToolGraphNode", "langchain_skills"]

ErrorHandler = Union[
    bool, str, Callable[..., str], type[Exception], tuple[type[Exception], ...]
]
_InputKind = Literal["list", "dict", "tool_calls"]

# Exceptions raised by wrapped LangChain tools, so a failed call's ToolMessage can be made from
# the exception itself (its repr, its type for handle_tool_errors) rather than from the string
# toolgraph reports. Consumed when the call's result is read; bounded in case it never is.
_raised: deque[tuple[str, BaseException]] = deque(maxlen=1024)
_raised_lock = threading.Lock()


class _HandledToolError(Exception):
    """A tool's own ``handle_tool_error`` turned its failure into this content."""

    def __init__(self, content: Any) -> None:
        super().__init__(str(content))
        self.content = content


def _record(name: str, e: BaseException) -> None:
    with _raised_lock:
        _raised.append((name, e))


def _head(e: BaseException) -> str:
    """How toolgraph words an exception in a result's ``error``: ``Type: message``."""
    try:
        message = str(e)
    except Exception:
        message = "<exception str() failed>"
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _take_raised(name: str, error_type: str | None, error: str) -> BaseException | None:
    with _raised_lock:
        for i, (n, e) in enumerate(_raised):
            if n == name and type(e).__name__ == error_type and error == _head(e):
                del _raised[i]
                return e
    return None


def _invocation_error(name: str, e: ValidationError, args: dict[str, Any]) -> ToolInvocationError:
    """A bad-arguments error as ToolNode words it."""
    errors = [d for d in e.errors() if d["loc"]]
    return ToolInvocationError(name, e, args, errors)


def _schema_error(t: BaseTool, args: dict[str, Any]) -> ToolInvocationError | None:
    """What LangChain's own validation says of arguments toolgraph found against the schema."""
    schema = t.args_schema
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return None
    try:
        schema.model_validate(args)
    except ValidationError as e:
        return _invocation_error(t.name, e, args)
    return None  # pydantic coerces what JSON schema refused (e.g. "2" for an integer)


def _wrap_langchain_tool(t: BaseTool) -> Any:
    """A toolgraph tool that runs ``t`` the way ToolNode does, keeping its raw output."""
    # A tool that handles its own errors reports them in a ToolMessage's status, which only
    # the tool-call form of invoke returns; other tools are invoked with the bare arguments so
    # a call that references this one receives the output itself, not its string form.
    as_call = bool(t.handle_tool_error or t.handle_validation_error)

    def prepare(kwargs: dict[str, Any]) -> Any:
        if as_call:
            return {"type": "tool_call", "name": t.name, "args": kwargs, "id": "toolgraph"}
        return kwargs

    def finish(out: Any) -> Any:
        if as_call and isinstance(out, ToolMessage):
            if out.status == "error":
                raise _HandledToolError(out.content)
            return out.content
        try:
            json.dumps(out)
        except (TypeError, ValueError):
            return str(out)  # ToolNode's content for what JSON cannot hold (a model, a set)
        return out

    def failed(e: Exception, kwargs: dict[str, Any]) -> BaseException:
        if isinstance(e, ValidationError):
            e = _invocation_error(t.name, e, kwargs)
        _record(t.name, e)
        return e

    parameters = convert_to_openai_tool(t)["function"]["parameters"]
    has_async = (
        t.coroutine is not None
        if isinstance(t, StructuredTool)
        else type(t)._arun is not BaseTool._arun
    )
    if has_async:

        async def run_async(**kwargs: Any) -> Any:
            try:
                return finish(await t.ainvoke(prepare(kwargs)))
            except Exception as e:
                raise failed(e, kwargs) from e

        fn: Callable[..., Any] = run_async
    else:

        def run_sync(**kwargs: Any) -> Any:
            try:
                return finish(t.invoke(prepare(kwargs)))
            except Exception as e:
                raise failed(e, kwargs) from e

        fn = run_sync
    return tool(fn, name=t.name, description=t.description, parameters=parameters)


def _tool_name(t: Any) -> str:
    if isinstance(t, BaseTool):
        return t.name
    return str(getattr(t, "name", None) or t.__name__)


def langchain_skills(tools: Sequence[BaseTool | Callable[..., Any]]) -> dict[str, Any]:
    """The ``skills=`` for a ParallelExecutor: LangChain tools wrapped, callables as they are."""
    return {
        _tool_name(t): _wrap_langchain_tool(t) if isinstance(t, BaseTool) else t
        for t in tools
    }


def _problems(message: str, calls: list[ToolCall]) -> dict[str, dict[str, Any]]:
    """The calls an ``InputError`` names (its ``  - call ID: what`` lines), as failed results."""
    found: dict[str, dict[str, Any]] = {}
    for line in message.splitlines():
        for position, c in enumerate(calls):
            for label in (f"call {c['id']}: ", f"call #{position}: "):
                if line.strip().startswith("- " + label):
                    what = line.strip()[len(label) + 2 :]
                    found[str(c["id"])] = {
                        "id": c["id"],
                        "tool": c["name"],
                        "success": False,
                        "status": "error",
                        "error_kind": "input",
                        "error": what,
                        "error_type": "InputError",
                    }
    return found


def _exception_for(
    result: dict[str, Any], call: ToolCall, lc_tool: BaseTool | None
) -> BaseException:
    """The exception behind a failed call: the one its tool raised, or one made from the report."""
    error = str(result.get("error") or result.get("status") or "failed")
    error_type = result.get("error_type")
    raised = _take_raised(call["name"], error_type, error)
    if raised is not None:
        return raised
    if result.get("error_kind") in ("schema", "input") and lc_tool is not None:
        invalid = _schema_error(lc_tool, call["args"])
        if invalid is not None:
            return invalid
    if result.get("error_kind") == "input":
        rejected: BaseException = InputError(error)
        return rejected
    if result.get("status") == "timeout":
        return TimeoutError(error)
    if result.get("status") != "error" or not error_type:
        failure: BaseException = ToolGraphError(error)
        return failure
    message = error[len(error_type) + 2 :] if error.startswith(f"{error_type}: ") else error
    builtin = getattr(builtins, error_type, None)
    cls = builtin if isinstance(builtin, type) and issubclass(builtin, Exception) else None
    cls = cls or type(error_type, (Exception,), {})
    return cls(message) if message else cls()


def _handled_types(flag: ErrorHandler) -> tuple[type[Exception], ...]:
    if isinstance(flag, type) and issubclass(flag, Exception):
        return (flag,)
    if isinstance(flag, tuple):
        return flag
    if callable(flag):
        try:  # ToolNode reads the handled types off the handler's annotation
            from langgraph.prebuilt.tool_node import _infer_handled_types

            return _infer_handled_types(cast("Callable[..., str]", flag))
        except ImportError:
            pass
    return (Exception,)


class ToolGraphNode(RunnableCallable):
    """A LangGraph node that runs the last AIMessage's tool calls through toolgraph.

    Args:
        tools: LangChain tools (``BaseTool``) and plain callables, as for ToolNode.
        config: the executor's ``ParallelExecutorConfig`` (limits, timeouts).
        name: the node's name.
        handle_tool_errors: as ToolNode's: ``True`` turns every exception into an error
            ToolMessage, ``False`` re-raises, a string is the content, a callable makes the
            content from the exception, exception types limit which are handled.
        executor: a ParallelExecutor to run on instead of building one (for example one with
            ``db=`` or built-in tools); it must hold the tools, e.g. from
            ``langchain_skills(tools)``.
        messages_key: the state key holding the messages.
    """

    def __init__(
        self,
        tools: Sequence[BaseTool | Callable[..., Any]],
        *,
        config: ParallelExecutorConfig | None = None,
        name: str = "tools",
        handle_tool_errors: ErrorHandler = True,
        executor: ParallelExecutor | None = None,
        messages_key: str = "messages",
    ) -> None:
        super().__init__(self._func, self._afunc, name=name, trace=False)
        if executor is not None and config is not None:
            raise ValueError("pass config= or executor=, not both")
        self.tool_names = [_tool_name(t) for t in tools]
        self.langchain_tools = {t.name: t for t in tools if isinstance(t, BaseTool)}
        self.handle_tool_errors = handle_tool_errors
        self.messages_key = messages_key
        self.executor = executor or ParallelExecutor(
            skills=langchain_skills(tools), config=config
        )

    def _func(self, input: Any, config: RunnableConfig) -> Any:
        calls, kind = self._parse_input(input)
        run = self._execute(calls, config.get("max_concurrency"))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            results = asyncio.run(run)
        else:  # a sync graph driven from a thread with a loop (a notebook, say)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                results = pool.submit(asyncio.run, run).result()
        return self._output(calls, results, kind)

    async def _afunc(self, input: Any, config: RunnableConfig) -> Any:
        calls, kind = self._parse_input(input)
        results = await self._execute(calls, config.get("max_concurrency"))
        return self._output(calls, results, kind)

    async def _execute(
        self, calls: list[ToolCall], limit: int | None
    ) -> dict[str, dict[str, Any]]:
        """Each call's result by id. toolgraph rejects a whole batch for one bad call (bad
        arguments, an unknown ``${reference}``); ToolNode fails that call alone, so the
        rejected calls get their problem as an error and the rest run."""
        pending = [c for c in calls if c["name"] in self.tool_names]
        rejected: dict[str, dict[str, Any]] = {}
        while pending:
            try:
                result = await self.executor.execute_parallel(pending, max_parallel_calls=limit)
            except InputError as e:
                problems = _problems(str(e), pending)
                if not problems:
                    raise
                rejected.update(problems)
                pending = [c for c in pending if c["id"] not in problems]
            else:
                return {**rejected, **{r["id"]: r for r in result.results}}
        return rejected

    def _parse_input(self, input: Any) -> tuple[list[ToolCall], _InputKind]:
        messages: Any
        kind: _InputKind = "dict"
        if isinstance(input, list):
            if input and isinstance(input[-1], dict) and input[-1].get("type") == "tool_call":
                return list(input), "tool_calls"
            messages, kind = input, "list"
        elif isinstance(input, dict) and input.get("__type") == "tool_call_with_context":
            return [input["tool_call"]], "tool_calls"
        elif isinstance(input, dict):
            messages = input.get(self.messages_key, [])
        else:
            messages = getattr(input, self.messages_key, [])
        if not messages:
            raise ValueError("No message found in input")
        ai = next((m for m in reversed(messages) if isinstance(m, AIMessage)), None)
        if ai is None:
            raise ValueError("No AIMessage found in input")
        return list(ai.tool_calls), kind

    def _output(
        self, calls: list[ToolCall], results: dict[str, dict[str, Any]], kind: _InputKind
    ) -> Any:
        messages = [self._message(c, results.get(str(c["id"]))) for c in calls]
        return messages if kind == "list" else {self.messages_key: messages}

    def _message(self, call: ToolCall, result: dict[str, Any] | None) -> ToolMessage:
        name, call_id = call["name"], str(call["id"])
        if result is None:  # not one of our tools: ToolNode's answer, never raised
            invalid = INVALID_TOOL_NAME_ERROR_TEMPLATE.format(
                requested_tool=name, available_tools=", ".join(self.tool_names)
            )
            return ToolMessage(invalid, name=name, tool_call_id=call_id, status="error")
        if result.get("success"):
            return ToolMessage(
                cast(Any, msg_content_output(result.get("data"))),
                name=name,
                tool_call_id=call_id,
                status="success",
            )
        e = _exception_for(result, call, self.langchain_tools.get(name))
        if isinstance(e, _HandledToolError):
            return ToolMessage(e.content, name=name, tool_call_id=call_id, status="error")
        flag = self.handle_tool_errors
        if isinstance(e, GraphBubbleUp) or not isinstance(e, Exception):
            raise e
        if not flag or not isinstance(e, _handled_types(flag)):
            raise e
        if isinstance(flag, str):
            content: Any = flag
        elif callable(flag) and not isinstance(flag, type):
            content = flag(e)
        else:
            content = TOOL_CALL_ERROR_TEMPLATE.format(error=repr(e))
        return ToolMessage(content, name=name, tool_call_id=call_id, status="error")
