"""What every Python test shares: skips counted like the Rust tests' skips, and the services.

A test that cannot run here (a service or a program missing) calls ``pytest.skip(reason)``
(or takes a fixture below that does). Like ``toolgraph_test_support::skip`` in the Rust tests,
the skip then appends one line, ``python/tests/FILE::TEST: reason``, to the file
``TOOLGRAPH_TEST_SKIP_LOG`` names (``cargo test-all`` sets it, and counts and lists the lines
after the run), and is a failure when ``TOOLGRAPH_REQUIRE_SERVICES`` is set (as CI sets it).
"""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Generator, NamedTuple, Optional

import pytest

SKIP_LOG_VAR = "TOOLGRAPH_TEST_SKIP_LOG"
REQUIRE_VAR = "TOOLGRAPH_REQUIRE_SERVICES"

# The workspace root: skips are named from it, as python/tests/FILE::TEST.
ROOT = Path(__file__).resolve().parents[2]


class PgSchema(NamedTuple):
    """A schema of the test's own in the test database: ``store_url`` opens a store in it,
    ``url`` is the database's URL (for ``psql``), ``schema`` qualifies its tables."""

    store_url: str
    url: str
    schema: str


@pytest.fixture
def pg_schema() -> Generator[PgSchema, None, None]:
    """PostgreSQL to test against (``TOOLGRAPH_TEST_PG_URL``), in a fresh schema dropped
    afterwards (so no test depends on what other builds migrated into the database), or a
    skip saying it is missing."""
    url = os.environ.get("TOOLGRAPH_TEST_PG_URL")
    if not url:
        pytest.skip("TOOLGRAPH_TEST_PG_URL is unset (no PostgreSQL to test against)")
    schema = f"tg_py_{uuid.uuid4().hex[:12]}"
    subprocess.run(["psql", url, "-qc", f"CREATE SCHEMA {schema}"], check=True)
    sep = "&" if "?" in url else "?"
    try:
        yield PgSchema(f"{url}{sep}options[search_path]={schema}", url, schema)
    finally:
        subprocess.run(["psql", url, "-qc", f"DROP SCHEMA {schema} CASCADE"], check=False)


def _check_name(nodeid: str, path: Path) -> str:
    """``python/tests/FILE::TEST``: the test's node id with its file named from the root."""
    try:
        file = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        file = nodeid.split("::", 1)[0]
    return "::".join([file] + nodeid.split("::")[1:])


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason


def _skipped(report: pytest.CollectReport | pytest.TestReport, check: str) -> None:
    """Notes a skip in the skip log, or turns it into a failure under TOOLGRAPH_REQUIRE_SERVICES."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = " ".join(_skip_reason(report).splitlines())
    if os.environ.get(REQUIRE_VAR) is not None:
        report.outcome = "failed"
        report.longrepr = f"{check} cannot run: {reason}, and {REQUIRE_VAR} is set"
        return
    log: Optional[str] = os.environ.get(SKIP_LOG_VAR)
    if log:
        try:
            # One write in append mode: lines of parallel runs do not interleave.
            with open(log, "a", encoding="utf-8") as file:
                file.write(f"{check}: {reason}\n")
        except OSError as e:
            print(f"could not note the skip in {log}: {e}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _skipped(report, _check_name(item.nodeid, item.path))
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A whole file skipped (``pytest.skip(..., allow_module_level=True)``, ``importorskip``)."""
    report = yield
    if isinstance(collector, pytest.Module):
        _skipped(report, _check_name(collector.nodeid, collector.path))
    return report
