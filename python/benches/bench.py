"""Overhead of toolgraph's Python ``execute_parallel`` against a bare ``asyncio.gather``.

    python python/benches/bench.py [--calls 10000] [--repeat 7] [--seed VIBEAGENT_DIR]

1. N no-op ``async def`` tools: ``await executor.execute_parallel(calls)`` (parse, plan,
   schedule under the limit, run every coroutine, measure, build the result with every
   call's output) against ``await asyncio.gather(*coroutines)`` of the same coroutines.
   The limit is set to N so both run everything at once; the default limit (5) is shown
   too. Median of ``--repeat`` runs, after one warm-up.
2. 5 × 100 ms ``asyncio.sleep`` fan-out: makespan and speedup.
3. With ``--seed DIR`` (a checkout of VibeAgent, whose ``vibeagent/core`` holds the seed's
   ``parallel_executor.py`` and ``skill.py``): N no-op ``BaseSkill``s through the seed's
   ``ParallelExecutor.execute_parallel`` against the same skills through toolgraph's
   ``execute_parallel_sync`` (toolgraph accepts the seed's skill objects as they are). The
   seed is loaded from its two files only, so none of VibeAgent's dependencies is needed.
   One run each (the seed takes minutes at 10,000 calls).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import statistics
import sys
import time
import types
from typing import Any, Awaitable, Callable, Dict, List

from toolgraph import ParallelExecutor, ParallelExecutorConfig


async def noop(i: int) -> int:
    return i


async def nap(ms: int) -> int:
    await asyncio.sleep(ms / 1000)
    return ms


def median_ms(run: Callable[[], Awaitable[Any]], repeat: int) -> float:
    async def timed() -> List[float]:
        await run()  # warm-up
        out = []
        for _ in range(repeat):
            start = time.perf_counter()
            await run()
            out.append((time.perf_counter() - start) * 1000)
        return out

    return statistics.median(asyncio.run(timed()))


def seed_comparison(seed_dir: str, n: int) -> None:
    core = os.path.join(seed_dir, "vibeagent", "core")
    if not os.path.exists(os.path.join(core, "parallel_executor.py")):
        core = seed_dir  # the two files given directly
    package = types.ModuleType("_seed_core")
    package.__path__ = [core]
    sys.modules["_seed_core"] = package
    skill = importlib.import_module("_seed_core.skill")
    seed = importlib.import_module("_seed_core.parallel_executor")

    class Noop(skill.BaseSkill):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__("noop")

        def execute(self, **kwargs: Any) -> Any:
            return skill.SkillResult(success=True, data=kwargs.get("i"))

        def validate(self) -> bool:
            return True

        def get_dependencies(self) -> List[str]:
            return []

    calls = [
        {"id": f"c{i}", "type": "function",
         "function": {"name": "noop", "arguments": '{"i": %d}' % i}}
        for i in range(n)
    ]
    theirs = seed.ParallelExecutor({"noop": Noop()})
    start = time.perf_counter()
    result = theirs.execute_parallel(calls)
    seed_s = time.perf_counter() - start
    assert result.success and len(result.results) == n

    ours = ParallelExecutor({"noop": Noop()}, ParallelExecutorConfig(max_parallel_calls=n))
    ours.execute_parallel_sync(calls[:100])  # warm-up
    start = time.perf_counter()
    mine = ours.execute_parallel_sync(calls)
    ours_s = time.perf_counter() - start
    assert mine.success and len(mine.results) == n
    print(f"{n} no-op BaseSkill calls (sync .execute), one run each:")
    print(f"  seed ParallelExecutor.execute_parallel {seed_s * 1000:10.1f} ms  "
          f"{seed_s * 1e6 / n:8.1f} µs/call")
    print(f"  toolgraph execute_parallel_sync        {ours_s * 1000:10.1f} ms  "
          f"{ours_s * 1e6 / n:8.1f} µs/call  ({seed_s / ours_s:.0f}× faster)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", metavar="VIBEAGENT_DIR",
                        help="also compare with the seed's executor from this checkout")
    args = parser.parse_args()
    n = args.calls
    calls: List[Dict[str, Any]] = [
        {"id": f"c{i}", "name": "noop", "arguments": {"i": i}} for i in range(n)
    ]

    async def gather() -> None:
        await asyncio.gather(*(noop(i) for i in range(n)))

    unlimited = ParallelExecutor({"noop": noop}, ParallelExecutorConfig(max_parallel_calls=n))
    default = ParallelExecutor({"noop": noop})

    async def tg_unlimited() -> None:
        result = await unlimited.execute_parallel(calls)
        assert result.success and len(result.results) == n

    async def tg_default() -> None:
        result = await default.execute_parallel(calls)
        assert result.success

    g = median_ms(gather, args.repeat)
    t = median_ms(tg_unlimited, args.repeat)
    d = median_ms(tg_default, args.repeat)
    print(f"{n} no-op async def tools, median of {args.repeat}:")
    print(f"  asyncio.gather                        {g:8.1f} ms  {g * 1000 / n:6.2f} µs/call")
    print(f"  execute_parallel (limit {n})      {t:8.1f} ms  {t * 1000 / n:6.2f} µs/call  "
          f"{t / g:4.2f}× gather")
    print(f"  execute_parallel (default limit 5)    {d:8.1f} ms  {d * 1000 / n:6.2f} µs/call  "
          f"{d / g:4.2f}× gather")

    fan = ParallelExecutor({"nap": nap})
    fan_calls = [{"id": f"n{i}", "name": "nap", "arguments": {"ms": 100}} for i in range(5)]

    async def fanout() -> Any:
        return await fan.execute_parallel(fan_calls)

    results = [asyncio.run(fanout()) for _ in range(args.repeat)]
    makespan = statistics.median(r.total_time_ms for r in results)
    speedup = statistics.median(r.speedup for r in results)
    print(f"5 × 100 ms fan-out: makespan {makespan:.1f} ms, speedup {speedup:.2f}×")
    if args.seed:
        seed_comparison(args.seed, n)


if __name__ == "__main__":
    main()
