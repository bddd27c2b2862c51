"""The seed's ParallelExecutor behaviour, for real, through the Rust runtime."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

import pytest

from conftest import PgSchema
from toolgraph import (
    InputError,
    ParallelExecutor,
    ParallelExecutorConfig,
    SkillError,
    tool,
)


def openai_call(id: str, name: str, **args: Any) -> Dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


class Peak:
    """Counts calls in flight (from any thread) and remembers the highest count."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.order: List[str] = []

    def enter(self, name: str) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.order.append("start " + name)

    def leave(self, name: str) -> None:
        with self.lock:
            self.now -= 1
            self.order.append("end " + name)


# --- the seed's own cases ------------------------------------------------------------------


def test_basic_parallel_execution_five_100ms_calls() -> None:
    async def search(query: str) -> str:
        await asyncio.sleep(0.1)
        return "results for " + query

    ex = ParallelExecutor({"search": search}, ParallelExecutorConfig(max_parallel_calls=5))
    calls = [openai_call(f"c{i}", "search", query=f"q{i}") for i in range(5)]
    result = ex.execute_parallel_sync(calls)
    assert result.success
    assert [r["data"] for r in result.results] == [f"results for q{i}" for i in range(5)]
    assert result.speedup > 4.5, result
    assert 100 <= result.total_time_ms < 200
    assert result.sequential_time_estimate_ms >= 500
    assert 0 < result.parallel_time_ms <= result.total_time_ms
    assert 0.9 < result.efficiency <= 1.0


def test_dependency_analysis() -> None:
    def read(path: str) -> str:
        return "text of " + path

    def write(path: str, text: str) -> str:
        return path

    ex = ParallelExecutor(
        {
            "read": tool(read, resources=lambda a: [("read", "file:" + a["path"])]),
            "write": tool(write, resources=lambda a: [("write", "file:" + a["path"])]),
        }
    )
    calls = [
        openai_call("a", "read", path="x"),
        openai_call("b", "read", path="y"),
        openai_call("c", "read", path="z"),
        openai_call("d", "write", path="out", text="${a}"),
        openai_call("e", "write", path="x", text="new"),
        {"id": "f", "name": "read", "arguments": {"path": "out"}, "depends_on": ["d"]},
    ]
    assert ex.topological_sort(calls) == [[0, 1, 2], [3, 4], [5]]
    assert ex.identify_independent_calls(calls) == [1, 2]
    assert ex.identify_dependent_calls(calls) == [0, 3, 4, 5]
    graph = {c["id"]: c for c in ex.build_dependency_graph(calls)}
    assert graph["d"]["dependencies"] == [0]
    assert graph["e"]["dependencies"] == [0]  # write-after-read on file:x
    assert graph["f"]["dependencies"] == [3]
    assert graph["a"]["dependents"] == [3, 4]
    reasons = {(e["from"], e["to"]): e["reason"] for e in ex.analyze(calls)["edges"]}
    assert "file:x" in reasons[("a", "e")]
    result = ex.execute_parallel_sync(calls)
    assert result.success
    assert result.results[3]["level"] == 1 and result.results[5]["level"] == 2


def test_partial_failure_two_ok_one_error_with_its_message() -> None:
    def ok(x: int) -> int:
        return x

    async def broken(x: int) -> int:
        raise ValueError(f"cannot handle {x}")

    ex = ParallelExecutor({"ok": ok, "broken": broken})
    result = ex.execute_parallel_sync(
        [openai_call("a", "ok", x=1), openai_call("b", "broken", x=2), openai_call("c", "ok", x=3)]
    )
    assert not result.success
    assert [r["status"] for r in result.results] == ["ok", "error", "ok"]
    failed = result.results[1]
    assert failed["error"] == "ValueError: cannot handle 2"
    assert failed["error_type"] == "ValueError"
    assert failed["traceback"].startswith("Traceback (most recent call last):")
    assert "raise ValueError" in failed["traceback"]
    assert result.errors == ["b (broken): error: ValueError: cannot handle 2"]
    assert result.metadata["status_counts"]["ok"] == 2


def test_sequential_fallback_runs_one_at_a_time_in_order() -> None:
    peak = Peak()

    async def step(n: int) -> int:
        peak.enter(str(n))
        await asyncio.sleep(0.01)
        peak.leave(str(n))
        return n

    ex = ParallelExecutor({"step": step}, ParallelExecutorConfig(enable_parallel=False))
    result = ex.execute_parallel_sync([openai_call(f"s{i}", "step", n=i) for i in range(4)])
    assert result.success
    assert peak.peak == 1
    assert peak.order == [f"{w} {i}" for i in range(4) for w in ("start", "end")]
    assert result.metadata["execution_mode"] == "sequential"


def test_performance_stats() -> None:
    async def echo(x: int) -> int:
        return x

    ex = ParallelExecutor({"echo": echo})
    assert ex.get_performance_stats()["total_executions"] == 0
    for _ in range(3):
        ex.execute_parallel_sync([openai_call("a", "echo", x=1), openai_call("b", "echo", x=2)])
    stats = ex.get_performance_stats()
    assert stats["total_executions"] == 3
    assert stats["avg_success_rate"] == 1.0
    assert stats["avg_speedup"] > 0
    assert stats["avg_execution_time_ms"] > 0
    assert stats["tools"]["echo"]["count"] == 6


def test_database_integration_sqlite(tmp_path: Path) -> None:
    async def fetch(url: str) -> str:
        await asyncio.sleep(0.01)
        return url

    db = tmp_path / "agent.db"
    ex = ParallelExecutor({"fetch": fetch}, db=f"sqlite://{db}")
    calls = [openai_call("a", "fetch", url="u1"), openai_call("b", "fetch", url="${a}")]
    result = ex.execute_parallel_sync(calls, session_id="s1")
    assert result.success and result.execution_id
    with sqlite3.connect(db) as conn:
        (status, speedup) = conn.execute(
            "select status, speedup from executions where id = ?", (result.execution_id,)
        ).fetchone()
        assert status == "finished" and speedup > 0
        calls_rows = conn.execute(
            "select call_id, status from tool_calls where execution_id = ? order by position",
            (result.execution_id,),
        ).fetchall()
        assert calls_rows == [("a", "ok"), ("b", "ok")]
        assert conn.execute(
            "select count(*) from batches where execution_id = ?", (result.execution_id,)
        ).fetchone() == (2,)
        metrics = dict(
            conn.execute(
                "select name, value from performance_metrics where execution_id = ?",
                (result.execution_id,),
            ).fetchall()
        )
        assert metrics["parallel_speedup"] > 0


def test_database_integration_postgres(pg_schema: PgSchema) -> None:
    async def echo(x: int) -> int:
        return x

    ex = ParallelExecutor({"echo": echo}, db=pg_schema.store_url)
    result = ex.execute_parallel_sync([openai_call("a", "echo", x=1)])
    table = f"{pg_schema.schema}.executions"
    out = subprocess.run(
        ["psql", pg_schema.url, "-Atc", f"select status from {table} where id = '{result.execution_id}'"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "finished"


# --- the API beyond the seed ---------------------------------------------------------------


def test_wire_shapes_openai_anthropic_langchain_and_skill_objects() -> None:
    class SkillResult:
        def __init__(self, success: bool, data: Any = None, error: str = "") -> None:
            self.success, self.data, self.error = success, data, error

    class Weather:
        """Tells the weather."""

        def execute(self, city: str) -> SkillResult:
            if city == "Atlantis":
                return SkillResult(False, error="no such city")
            return SkillResult(True, {"city": city, "temp": 21})

    ex = ParallelExecutor({"weather": Weather()})
    result = ex.execute_parallel_sync(
        [
            openai_call("o", "weather", city="Paris"),
            {"type": "tool_use", "id": "t", "name": "weather", "input": {"city": "Rome"}},
            {"name": "weather", "args": {"city": "Atlantis"}, "id": "l", "type": "tool_call"},
        ]
    )
    assert result.results[0]["data"] == {"city": "Paris", "temp": 21}
    assert result.results[1]["data"]["city"] == "Rome"
    assert result.results[2]["error"] == "SkillError: no such city"
    assert SkillError.__name__ == result.results[2]["error_type"]
    messages = result.to_openai_messages()
    assert messages[0] == {"role": "tool", "tool_call_id": "o", "content": '{"city": "Paris", "temp": 21}'}
    blocks = result.to_anthropic_content()
    assert blocks[2]["is_error"] is True and blocks[2]["tool_use_id"] == "l"
    assert result.to_dict()["success"] is False


def test_bad_input_names_the_call_and_runs_nothing() -> None:
    ran: List[int] = []

    def add(a: int, b: int) -> int:
        ran.append(1)
        return a + b

    ex = ParallelExecutor({"add": add})
    with pytest.raises(InputError) as err:
        ex.execute_parallel_sync(
            [
                openai_call("x", "add", a=1, b=2),
                openai_call("y", "add", a="one", b=2),
                openai_call("z", "nope"),
                openai_call("w", "add", a="${missing}", b=1),
            ]
        )
    text = str(err.value)
    assert "y" in text and "z" in text and "nope" in text and "missing" in text
    assert ran == []
    with pytest.raises(ValueError):  # InputError is a ValueError
        ex.execute_parallel_sync([{"function": {"name": "add"}}])


def test_sync_and_async_tools_mixed_with_references() -> None:
    def blocking_square(n: int) -> int:
        time.sleep(0.05)
        return n * n

    async def plus_one(n: int) -> int:
        await asyncio.sleep(0.01)
        return n + 1

    ex = ParallelExecutor({"square": blocking_square, "plus": plus_one})
    result = ex.execute_parallel_sync(
        [
            openai_call("a", "square", n=3),
            openai_call("b", "plus", n="${a}"),
            openai_call("c", "square", n="${b}"),
            openai_call("d", "plus", n=0),
        ]
    )
    assert [r["data"] for r in result.results] == [9, 10, 100, 1]
    assert result.results[3]["finished_ms"] < result.results[0]["finished_ms"]


def test_limits_hold_with_python_tools() -> None:
    peak_all, peak_tool = Peak(), Peak()

    async def a(i: int) -> int:
        peak_all.enter("a")
        peak_tool.enter("a")
        await asyncio.sleep(0.02)
        peak_tool.leave("a")
        peak_all.leave("a")
        return i

    def b(i: int) -> int:
        peak_all.enter("b")
        time.sleep(0.02)
        peak_all.leave("b")
        return i

    ex = ParallelExecutor(
        {"a": a, "b": b},
        ParallelExecutorConfig(max_parallel_calls=4, per_tool_parallel_limits={"a": 2}),
    )
    calls = [openai_call(f"a{i}", "a", i=i) for i in range(10)]
    calls += [openai_call(f"b{i}", "b", i=i) for i in range(10)]
    assert ex.execute_parallel_sync(calls).success
    assert peak_all.peak == 4
    assert peak_tool.peak == 2

    peak_all.peak = 0
    assert ex.execute_parallel_sync(calls, max_parallel_calls=3).success
    assert peak_all.peak == 3


def test_tool_max_concurrency_across_concurrent_executions() -> None:
    peak = Peak()

    @tool(max_concurrency=2)
    async def api(i: int) -> int:
        peak.enter("api")
        await asyncio.sleep(0.02)
        peak.leave("api")
        return i

    ex = ParallelExecutor({"api": api}, ParallelExecutorConfig(max_parallel_calls=50))

    async def both() -> List[Any]:
        batch = [openai_call(f"c{i}", "api", i=i) for i in range(6)]
        return list(await asyncio.gather(ex.execute_parallel(batch), ex.execute_parallel(batch)))

    results = asyncio.run(both())
    assert all(r.success for r in results)
    assert peak.peak == 2


def test_timeout_cancels_the_coroutine_and_retries_only_idempotent() -> None:
    cancelled: List[str] = []
    attempts: Dict[str, int] = {"flaky": 0, "write": 0}

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append("hang")
            raise

    @tool(idempotent=True)
    async def flaky() -> str:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    async def write() -> str:
        attempts["write"] += 1
        raise ConnectionError("refused")

    ex = ParallelExecutor(
        {"hang": hang, "flaky": flaky, "write": write},
        ParallelExecutorConfig(
            default_timeout_ms=100,
            retry={"max_attempts": 3, "base_delay_ms": 1, "max_delay_ms": 5},
        ),
    )
    result = ex.execute_parallel_sync(
        [openai_call("h", "hang"), openai_call("f", "flaky"), openai_call("w", "write")]
    )
    statuses = {r["id"]: r["status"] for r in result.results}
    assert statuses == {"h": "timeout", "f": "ok", "w": "error"}
    assert cancelled == ["hang"]
    assert attempts == {"flaky": 3, "write": 1}
    assert result.results[1]["attempts"] == 3


def test_dependants_of_a_failure_are_skipped_independent_branches_finish() -> None:
    async def fail() -> None:
        raise RuntimeError("down")

    async def use(x: Any) -> Any:
        return x

    ex = ParallelExecutor({"fail": fail, "use": use})
    result = ex.execute_parallel_sync(
        [openai_call("a", "fail"), openai_call("b", "use", x="${a}"), openai_call("c", "use", x=1)]
    )
    assert [r["status"] for r in result.results] == ["error", "skipped", "ok"]
    assert "a" in result.results[1]["error"]


def test_cancelling_execute_parallel_cancels_every_call() -> None:
    cancelled: List[str] = []
    finished: List[str] = []

    async def slow(label: str) -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(label)
            raise
        finished.append(label)
        return label

    ex = ParallelExecutor({"slow": slow}, ParallelExecutorConfig(max_parallel_calls=10))

    async def main() -> float:
        task = asyncio.ensure_future(
            ex.execute_parallel([openai_call(f"c{i}", "slow", label=f"c{i}") for i in range(4)])
        )
        await asyncio.sleep(0.1)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    took = asyncio.run(main())
    assert sorted(cancelled) == ["c0", "c1", "c2", "c3"]
    assert finished == []
    assert took < 1.0


def test_python_tools_share_python_objects_safely_from_many_calls() -> None:
    class Counter:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.n = 0

        def bump(self) -> int:
            with self.lock:
                self.n += 1
                return self.n

    counter = Counter()
    seen: List[int] = []

    def sync_bump(i: int) -> int:
        v = counter.bump()
        seen.append(v)
        return v

    async def async_bump(i: int) -> int:
        await asyncio.sleep(0)
        v = counter.bump()
        seen.append(v)
        return v

    ex = ParallelExecutor(
        {"s": sync_bump, "a": async_bump}, ParallelExecutorConfig(max_parallel_calls=32)
    )
    calls = [openai_call(f"s{i}", "s", i=i) for i in range(200)]
    calls += [openai_call(f"a{i}", "a", i=i) for i in range(200)]
    result = ex.execute_parallel_sync(calls)
    assert result.success
    assert counter.n == 400
    assert sorted(seen) == list(range(1, 401))


def test_outputs_that_are_not_plain_json() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    async def point() -> Point:
        return Point(1, 2)

    async def things() -> Any:
        return {"set": {3, 1, 2}, "tuple": (1, "a"), "bytes": b"hi", 7: "int key", None: 0}

    async def huge() -> int:
        return 2**70

    ex = ParallelExecutor({"point": point, "things": things, "huge": huge})
    result = ex.execute_parallel_sync(
        [openai_call("p", "point"), openai_call("t", "things"), openai_call("h", "huge")]
    )
    assert result.results[0]["data"] == {"x": 1, "y": 2}
    data = result.results[1]["data"]
    assert data["set"] == [1, 2, 3] and data["tuple"] == [1, "a"] and data["bytes"] == "hi"
    assert data["7"] == "int key" and data["null"] == 0  # keys as json.dumps writes them
    # An integer JSON cannot carry exactly is the call's error, never a rounded float.
    assert result.results[2]["success"] is False
    assert "1180591620717411303424 does not fit in 64 bits" in result.results[2]["error"]


def test_arguments_that_cannot_be_json_name_their_call_and_run_nothing() -> None:
    ran: List[Any] = []

    async def echo(**kwargs: Any) -> Any:
        ran.append(kwargs)
        return kwargs

    ex = ParallelExecutor({"echo": echo})
    cyclic: Dict[str, Any] = {}
    cyclic["self"] = cyclic
    for bad, why in [
        (cyclic, "deeper than"),
        ({"n": 2**64}, "does not fit in 64 bits"),
        ({1: "a", "1": "b"}, "both \"1\""),
    ]:
        calls = [
            {"id": "fine", "name": "echo", "args": {"x": 1}},
            {"id": "odd", "name": "echo", "args": bad},
        ]
        with pytest.raises(InputError) as err:
            ex.execute_parallel_sync(calls)
        assert "call odd" in str(err.value) and why in str(err.value), str(err.value)
        # A call without an id is named by its position.
        with pytest.raises(InputError, match="call #1"):
            ex.execute_parallel_sync([calls[0], {"name": "echo", "args": bad}])
    assert ran == []


def test_schemas_from_type_hints_and_docstrings() -> None:
    async def search(query: str, limit: int = 10, mode: Literal["fast", "deep"] = "fast",
                     site: Optional[str] = None) -> list:
        """Searches the web.

        Args:
            query: what to look for
            limit: how many results
        """
        return []

    ex = ParallelExecutor({"search": search})
    (spec,) = ex.tool_specs("openai")
    fn = spec["function"]
    assert fn["description"] == "Searches the web."
    props = fn["parameters"]["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for"}
    assert props["limit"]["default"] == 10
    assert props["mode"]["enum"] == ["fast", "deep"]
    assert props["site"]["type"] == ["string", "null"]
    assert fn["parameters"]["required"] == ["query"]
    (anthropic,) = ex.tool_specs("anthropic")
    assert anthropic["input_schema"] == fn["parameters"]


def test_update_config_applies_to_the_next_run() -> None:
    peak = Peak()

    async def work(i: int) -> int:
        peak.enter("w")
        await asyncio.sleep(0.01)
        peak.leave("w")
        return i

    ex = ParallelExecutor({"work": work}, ParallelExecutorConfig(max_parallel_calls=5))
    ex.update_config(max_parallel_calls=2)
    assert ex.config.max_parallel_calls == 2
    assert ex.execute_parallel_sync([openai_call(f"w{i}", "work", i=i) for i in range(6)]).success
    assert peak.peak == 2
    with pytest.raises(TypeError):
        ex.update_config(max_parallel=3)
    with pytest.raises(ValueError):
        ex.update_config(max_parallel_calls=0)
    with pytest.raises(ValueError, match="max_parallel_calls"):
        ex.update_config(max_parallel_calls=-1)
    with pytest.raises(ValueError, match="cannot be None"):
        ex.update_config(default_timeout_ms=None)


def test_from_config_mixes_builtin_tools_with_python_tools(tmp_path: Path) -> None:
    (tmp_path / "toolgraph.toml").write_text(
        f'[files]\nroot = "{tmp_path}"\n[store]\nrecord = false\n'
    )

    async def shout(text: str) -> str:
        return text.upper()

    ex = ParallelExecutor.from_config(str(tmp_path / "toolgraph.toml"), skills={"shout": shout})
    result = ex.execute_parallel_sync(
        [
            {"id": "w", "name": "file_write", "arguments": {"path": "a.txt", "content": "hi"}},
            {"id": "r", "name": "file_read", "arguments": {"path": "a.txt"}},
            {"id": "s", "name": "shout", "arguments": {"text": "${r.content}"}},
        ]
    )
    assert result.success, result.errors
    assert result.results[2]["data"] == "HI"
    names = {s["function"]["name"] for s in ex.tool_specs()}
    assert {"shout", "file_read", "sleep", "http_fetch"} <= names


def test_from_config_caches_idempotent_python_tools(tmp_path: Path) -> None:
    (tmp_path / "toolgraph.toml").write_text(
        '[store]\nrecord = false\n[cache]\nenabled = true\nbackend = "memory"\n'
        '[tools.lookup]\nversion = "2"\n'
    )
    seen: List[str] = []

    @tool(idempotent=True)
    async def lookup(q: str) -> str:
        seen.append(q)
        await asyncio.sleep(0.01)
        return q.upper()

    @tool
    async def note(q: str) -> str:  # not idempotent: never cached
        seen.append("note " + q)
        return q

    ex = ParallelExecutor.from_config(
        str(tmp_path / "toolgraph.toml"), skills={"lookup": lookup, "note": note}
    )
    calls = [
        {"id": "a", "name": "lookup", "arguments": {"q": "x"}},
        {"id": "b", "name": "lookup", "arguments": {"q": "x"}},  # in flight with a: runs once
        {"id": "n", "name": "note", "arguments": {"q": "x"}},
    ]
    first = ex.execute_parallel_sync(calls)
    assert first.success, first.errors
    assert sorted(seen) == ["note x", "x"]
    assert [r["cached"] for r in first.results].count(True) == 1
    second = ex.execute_parallel_sync(calls)
    assert [r["data"] for r in second.results] == ["X", "X", "x"]
    assert [r["cached"] for r in second.results] == [True, True, False]
    assert sorted(seen) == ["note x", "note x", "x"]


def test_sync_entry_point_refuses_a_running_loop() -> None:
    ex = ParallelExecutor({})

    async def main() -> None:
        with pytest.raises(RuntimeError, match="running event loop"):
            ex.execute_parallel_sync([])

    asyncio.run(main())


def test_each_call_runs_in_its_own_task_with_its_own_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    outer: List[Any] = []

    async def timed(x: int) -> str:
        me = asyncio.current_task()
        assert me is not None and me is not outer[0] and me in asyncio.all_tasks()
        assert isinstance(me, asyncio.Task)
        if sys.version_info >= (3, 11):
            # A deadline set in the first step (which runs eagerly) cancels this task only.
            try:
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined,unused-ignore]
                    await asyncio.sleep(1)
            except TimeoutError:
                pass
            assert asyncio.current_task() is me and not me.cancelling()  # type: ignore[attr-defined,unused-ignore]
        try:
            await asyncio.wait_for(asyncio.sleep(1), timeout=0.02)
        except asyncio.TimeoutError:
            pass
        token = var.set(f"in {x}")
        await asyncio.sleep(0.001)
        var.reset(token)  # fails when the coroutine's steps run in different contexts
        return var.get()

    ex = ParallelExecutor({"timed": timed}, ParallelExecutorConfig(max_parallel_calls=10))

    async def main() -> Any:
        outer.append(asyncio.current_task())
        return await ex.execute_parallel([openai_call(f"c{i}", "timed", x=i) for i in range(8)])

    result = asyncio.run(main())
    assert [r["data"] for r in result.results] == ["unset"] * 8, result.errors


def test_a_resources_function_that_raises_warns_and_orders_the_call() -> None:
    peak = Peak()

    def picky(a: Dict[str, Any]) -> List[Any]:
        if a["n"] == 1:
            raise KeyError("path")
        return []

    @tool(resources=picky)
    async def work(n: int) -> int:
        peak.enter(str(n))
        await asyncio.sleep(0.01)
        peak.leave(str(n))
        return n

    ex = ParallelExecutor({"work": work})
    with pytest.warns(RuntimeWarning, match="resources function of tool work raised KeyError"):
        result = ex.execute_parallel_sync([openai_call(f"w{i}", "work", n=i) for i in range(3)])
    assert result.success
    # w1 ran alone: after w0, before w2.
    assert peak.order.index("end 0") < peak.order.index("start 1")
    assert peak.order.index("end 1") < peak.order.index("start 2")


def test_tools_using_anyio_task_groups_and_deadlines() -> None:
    import anyio

    async def fan(n: int) -> List[Any]:
        out: List[Any] = []
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                for i in range(n):

                    async def child(i: int = i) -> None:
                        await anyio.sleep(0.005)
                        out.append(i)

                    group.start_soon(child)
        try:
            with anyio.fail_after(0.01):
                await anyio.sleep(1)
        except TimeoutError:
            out.append("deadline")
        return sorted(out, key=str)

    ex = ParallelExecutor({"fan": fan}, ParallelExecutorConfig(max_parallel_calls=4))
    result = ex.execute_parallel_sync([openai_call(f"f{i}", "fan", n=3) for i in range(6)])
    assert result.success, result.errors
    assert [r["data"] for r in result.results] == [[0, 1, 2, "deadline"]] * 6


def test_odd_failures_still_answer() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    async def bad_first_step() -> None:
        raise Unprintable()

    async def bad_later() -> None:
        await asyncio.sleep(0)
        raise Unprintable()

    async def inner() -> int:
        return 1

    def returns_coroutine() -> Any:
        return inner()

    async def fine() -> str:
        return "fine"

    ex = ParallelExecutor(
        {"a": bad_first_step, "b": bad_later, "c": returns_coroutine, "d": fine},
        ParallelExecutorConfig(default_timeout_ms=0),
    )
    result = ex.execute_parallel_sync(
        [openai_call("a", "a"), openai_call("b", "b"), openai_call("c", "c"), openai_call("d", "d")]
    )
    assert [r["status"] for r in result.results] == ["error", "error", "error", "ok"]
    assert result.results[0]["error"] == "Unprintable: <exception str() failed>"
    assert "declare it `async def`" in result.results[2]["error"]

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="async generator"):
        ParallelExecutor({"g": agen})
