"""The README's example: Python tools, a dependency by reference, one resource hazard.

    python python/examples/quickstart.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from toolgraph import ParallelExecutor, ParallelExecutorConfig, tool


@tool(idempotent=True, max_concurrency=4)
async def search(query: str) -> Dict[str, Any]:
    """Searches a (pretend) web index.

    Args:
        query: what to look for
    """
    await asyncio.sleep(0.05)
    return {"query": query, "hits": [f"{query} #1", f"{query} #2"]}


def write_file(path: str, text: str) -> str:
    """Writes text to a file."""
    Path(path).write_text(text)
    return path


async def main() -> None:
    folder = tempfile.mkdtemp()
    target = str(Path(folder) / "notes.txt")
    executor = ParallelExecutor(
        skills={
            "search": search,
            "write_file": tool(write_file, resources=lambda a: [("write", "file:" + a["path"])]),
        },
        config=ParallelExecutorConfig(max_parallel_calls=5),
    )
    calls: List[Dict[str, Any]] = [
        {"id": "a", "type": "function", "function": {"name": "search", "arguments": '{"query": "rust"}'}},
        {"id": "b", "type": "function", "function": {"name": "search", "arguments": '{"query": "python"}'}},
        {"id": "w", "name": "write_file", "arguments": {"path": target, "text": "${a.hits.0}"}},
    ]
    result = await executor.execute_parallel(calls)
    for r in result.results:
        print(r["id"], r["status"], r["data"])
    print(result)
    print(executor.topological_sort(calls))


if __name__ == "__main__":
    asyncio.run(main())
