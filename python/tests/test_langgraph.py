"""ToolGraphNode against LangGraph's own ToolNode, in a small StateGraph with a scripted model."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Any, Callable

import pytest

pytest.importorskip("langgraph")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import BaseTool, StructuredTool, tool  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from langgraph._internal._constants import CONFIG_KEY_RUNTIME  # noqa: E402
from langgraph.prebuilt import ToolNode, tools_condition  # noqa: E402
from langgraph.runtime import Runtime  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

from toolgraph import ParallelExecutorConfig  # noqa: E402
from toolgraph.langgraph import ToolGraphNode  # noqa: E402


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def call(tool_name: str, call_id: str, /, **args: Any) -> dict[str, Any]:
    return {"name": tool_name, "args": args, "id": call_id, "type": "tool_call"}


def build_graph(tools_node: Any, tool_calls: list[dict[str, Any]]) -> Any:
    """agent (scripted: the tool calls, then a final answer) <-> tools."""
    model = GenericFakeChatModel(
        messages=iter([AIMessage("", tool_calls=tool_calls), AIMessage("done")])
    )

    def agent(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    g = StateGraph(State)
    g.add_node("agent", agent)
    g.add_node("tools", tools_node)
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "agent")
    return g.compile()


def run(graph: Any, mode: str, config: dict[str, Any] | None = None) -> list[ToolMessage]:
    inp = {"messages": [HumanMessage("go")]}
    if mode == "async":
        out = asyncio.run(graph.ainvoke(inp, config=config))
    else:
        out = graph.invoke(inp, config=config)
    assert out["messages"][-1].content == "done"
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def fields(messages: list[ToolMessage]) -> list[tuple[Any, ...]]:
    return [(m.tool_call_id, m.name, m.status, m.content) for m in messages]


# --- tools of every output kind, and one that raises ------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _weather(city: str) -> dict[str, Any]:
    """Weather for a city."""
    return {"city": city, "temp_c": 21.5, "sky": "sonnig", "tags": ["warm", "dry"]}


async def _aweather(city: str) -> dict[str, Any]:
    await asyncio.sleep(0.01)
    return _weather(city)


# Sync and async, so ToolNode can run it in both graph modes.
weather = StructuredTool.from_function(func=_weather, coroutine=_aweather, name="weather")


@tool
def echo(text: str) -> str:
    """Echo the text back."""
    return text


@tool
def blocks(text: str) -> list[dict[str, str]]:
    """Return the text as a content block."""
    return [{"type": "text", "text": text}]


@tool
def words(text: str) -> list[str]:
    """Split the text into words."""
    return text.split()


@tool
def fail(city: str) -> str:
    """Always fails."""
    raise ValueError(f"no such city: {city}")


class Profile(BaseModel):
    name: str
    tags: set[str]


@tool
def profile(name: str) -> Profile:
    """A profile: a model JSON cannot hold, so ToolNode shows its str()."""
    return Profile(name=name, tags={"x"})


TOOLS: list[BaseTool] = [add, weather, echo, blocks, words, fail, profile]
CALLS = [
    call("add", "c1", a=2, b=40),
    call("weather", "c2", city="Zürich"),
    call("echo", "c3", text='{"not": "parsed"}'),
    call("blocks", "c4", text="hi"),
    call("words", "c5", text="a b c"),
    call("fail", "c6", city="Atlantis"),
    call("nope", "c7", x=1),
    call("add", "c8", a="two", b=1),
    call("profile", "c9", name="Ada"),
]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_same_tool_messages_as_toolnode(mode: str) -> None:
    expected = run(build_graph(ToolNode(TOOLS, handle_tool_errors=True), CALLS), mode)
    got = run(build_graph(ToolGraphNode(TOOLS), CALLS), mode)

    assert fields(got) == fields(expected)
    by_id = {m.tool_call_id: m for m in got}
    assert [m.tool_call_id for m in got] == [c["id"] for c in CALLS]
    assert by_id["c1"].content == "42" and by_id["c1"].status == "success"
    assert by_id["c2"].content == (
        '{"city": "Zürich", "temp_c": 21.5, "sky": "sonnig", "tags": ["warm", "dry"]}'
    )
    assert by_id["c3"].content == '{"not": "parsed"}'
    assert by_id["c4"].content == [{"type": "text", "text": "hi"}]
    assert by_id["c5"].content == '["a", "b", "c"]'
    assert by_id["c6"].content == (
        "Error: ValueError('no such city: Atlantis')\n Please fix your mistakes."
    )
    assert by_id["c6"].status == "error" and by_id["c6"].name == "fail"
    assert by_id["c7"].content == (
        "Error: nope is not a valid tool, try one of "
        "[add, weather, echo, blocks, words, fail, profile]."
    )
    assert by_id["c8"].status == "error"
    assert str(by_id["c8"].content).startswith("Error: ToolInvocationError(\"Error invoking tool 'add'")
    assert by_id["c9"].content == "name='Ada' tags={'x'}"


@pytest.mark.parametrize(
    "flag",
    [
        "tool failed",
        lambda e: f"handled {type(e).__name__}",
        ValueError,
        (KeyError, ValueError),
    ],
)
def test_handle_tool_errors_variants_as_toolnode(flag: Any) -> None:
    calls = [call("fail", "f1", city="x"), call("add", "a1", a=1, b=2)]
    expected = run(build_graph(ToolNode(TOOLS, handle_tool_errors=flag), calls), "sync")
    got = run(build_graph(ToolGraphNode(TOOLS, handle_tool_errors=flag), calls), "sync")
    assert fields(got) == fields(expected)
    assert got[0].status == "error" and got[1].content == "3"


@pytest.mark.parametrize("flag", [False, KeyError])
def test_unhandled_error_raises_like_toolnode(flag: Any) -> None:
    calls = [call("fail", "f1", city="Atlantis")]
    for node in (ToolNode(TOOLS, handle_tool_errors=flag), ToolGraphNode(TOOLS, handle_tool_errors=flag)):
        with pytest.raises(ValueError, match="no such city: Atlantis"):
            run(build_graph(node, calls), "sync")


# ToolNode needs the Runtime a graph gives its nodes; ToolGraphNode does not.
RUNTIME_CONFIG: Any = {"configurable": {CONFIG_KEY_RUNTIME: Runtime()}}


def test_node_inputs_as_toolnode() -> None:
    """A list of messages gives a list back; bare tool calls and state give {"messages": ...}."""
    msgs = [HumanMessage("go"), AIMessage("", tool_calls=CALLS[:2])]
    for inp in (msgs, {"messages": msgs}, CALLS[:2]):
        expected = ToolNode(TOOLS).invoke(inp, config=RUNTIME_CONFIG)
        got = ToolGraphNode(TOOLS).invoke(inp)
        assert type(got) is type(expected)
        unwrap: Callable[[Any], list[ToolMessage]] = lambda o: o if isinstance(o, list) else o["messages"]
        assert fields(unwrap(got)) == fields(unwrap(expected))


# --- concurrency -----------------------------------------------------------------------


class Gauge:
    """Counts the calls running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def slow_tool(self) -> BaseTool:
        gauge = self

        @tool
        async def slow(i: int) -> int:
            """Sleeps 50 ms."""
            with gauge.lock:
                gauge.now += 1
                gauge.peak = max(gauge.peak, gauge.now)
            try:
                await asyncio.sleep(0.05)
            finally:
                with gauge.lock:
                    gauge.now -= 1
            return i

        return slow


SIX = [call("slow", f"s{i}", i=i) for i in range(6)]


def test_run_max_concurrency_honoured_where_toolnode_async_ignores_it() -> None:
    limit = {"max_concurrency": 2}

    lc = Gauge()
    run(build_graph(ToolNode([lc.slow_tool()]), SIX), "async", limit)
    assert lc.peak > 2, "ToolNode's async path gathers every call at once"

    for mode in ("async", "sync"):
        tg = Gauge()
        got = run(build_graph(ToolGraphNode([tg.slow_tool()]), SIX), mode, limit)
        assert tg.peak == 2, mode
        assert [m.content for m in got] == [str(i) for i in range(6)]

    unlimited = Gauge()
    run(build_graph(ToolGraphNode([unlimited.slow_tool()]), SIX), "async")
    assert unlimited.peak > 2


def test_executor_config_limit_honoured() -> None:
    g = Gauge()
    node = ToolGraphNode([g.slow_tool()], config=ParallelExecutorConfig(max_parallel_calls=2))
    run(build_graph(node, SIX), "async")
    assert g.peak == 2


# --- dependencies ----------------------------------------------------------------------


def test_dependent_call_runs_after_and_receives_output() -> None:
    log: list[tuple[str, str, float]] = []

    @tool
    async def make_token(seed: str) -> str:
        """Make a token."""
        log.append(("start", "make_token", time.monotonic()))
        await asyncio.sleep(0.05)
        log.append(("end", "make_token", time.monotonic()))
        return f"tok-{seed}"

    @tool
    async def use_token(token: str) -> str:
        """Use a token."""
        log.append(("start", "use_token:" + token, time.monotonic()))
        return f"used {token}"

    # The dependent call comes first in the AIMessage; its ToolMessage stays first.
    calls = [
        call("use_token", "use", token="${mk}"),
        call("make_token", "mk", seed="abc"),
    ]
    got = run(build_graph(ToolGraphNode([make_token, use_token]), calls), "async")

    assert [(m.tool_call_id, m.content, m.status) for m in got] == [
        ("use", "used tok-abc", "success"),
        ("mk", "tok-abc", "success"),
    ]
    events = [(kind, what) for kind, what, _ in sorted(log, key=lambda e: e[2])]
    assert events == [
        ("start", "make_token"),
        ("end", "make_token"),
        ("start", "use_token:tok-abc"),
    ]


def test_sync_graph_driven_from_a_running_loop() -> None:
    """graph.invoke from a thread with a running loop (a notebook cell) still runs the calls."""

    async def inside_loop() -> list[ToolMessage]:
        return run(build_graph(ToolGraphNode(TOOLS), CALLS[:2]), "sync")

    got = asyncio.run(inside_loop())
    assert [(m.tool_call_id, m.status) for m in got] == [("c1", "success"), ("c2", "success")]


def test_rejected_call_fails_alone() -> None:
    """toolgraph rejects a batch with a bad call; the node fails that call (with ToolNode's
    words for bad arguments) and a call referencing it, and runs the rest."""
    calls = [
        call("add", "bad", a="x", b=1),
        call("echo", "dep", text="got ${bad}"),
        call("add", "ok", a=1, b=2),
    ]
    got = {m.tool_call_id: m for m in run(build_graph(ToolGraphNode(TOOLS), calls), "async")}
    expected = run(build_graph(ToolNode(TOOLS, handle_tool_errors=True), calls[:1]), "async")

    assert fields([got["bad"]]) == fields(expected)
    assert str(got["bad"].content).startswith("Error: ToolInvocationError(")
    assert got["dep"].status == "error"
    assert str(got["dep"].content).startswith("Error: InputError(") and "bad" in got["dep"].content
    assert (got["ok"].status, got["ok"].content) == ("success", "3")


def test_each_call_gets_its_own_exception() -> None:
    @tool
    def check(code: str) -> str:
        """Checks a code."""
        if code == "ab":
            time.sleep(0.05)
        raise ValueError(code)

    ai = AIMessage(
        content="",
        tool_calls=[
            {"id": "c1", "name": "check", "args": {"code": "ab"}},
            {"id": "c2", "name": "check", "args": {"code": "a"}},
        ],
    )
    out = ToolGraphNode([check]).invoke({"messages": [ai]})
    assert [m.content for m in out["messages"]] == [
        "Error: ValueError('ab')\n Please fix your mistakes.",
        "Error: ValueError('a')\n Please fix your mistakes.",
    ]
