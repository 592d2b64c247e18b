"""InfluxDB made ready, or one clear error: against InfluxDB 1.6.7, with and without authentication."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ptmon.config import InfluxConfig
from ptmon.sinks.influx import InfluxSink
from ptmon.sinks.influx_setup import create_database_statement, query_error
from tests.fixtures_influx import count_points, run, wait_until
from tests.servers import InfluxServer, influxql

FAST = {"flush_interval": 0.05, "retry_min": 0.05, "retry_max": 0.2, "timeout": 5.0}
LINES = [f"hb,device=d{i} v={i}i {1_700_000_000_000_000 + i}" for i in range(20)]
ADMIN, WRITER = ("admin", "admin-Secret-1"), ("writer", "writer-Secret-2")


def config(url: str, **overrides: Any) -> InfluxConfig:
    return InfluxConfig(url=url, **{**FAST, **overrides})


def errors_from_the_sink(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ptmon.sinks.influx" and r.levelno >= logging.ERROR]


async def write_and_wait(sink: InfluxSink, failures: int) -> None:
    """Submit the lines and let ``failures`` retries fail (a real failing write, several times)."""
    sink.submit(LINES)
    await wait_until(lambda: sink._failures >= failures, 15, f"{failures} failed writes")


def test_database_is_created_at_start(influx_server: InfluxServer, tmp_path: Path) -> None:
    """Test that the v1 sink creates a database that does not exist yet, and every point is written."""
    async def scenario() -> None:
        async with InfluxSink(config(influx_server.url, database="made_at_start"), spool_dir=tmp_path) as sink:
            sink.submit(LINES)
            await wait_until(lambda: sink.pending_points == 0, 15, "points written")

    try:
        run(scenario())
        assert count_points(influx_server.url, "made_at_start", "hb") == 20
    finally:
        influxql(influx_server.url, "made_at_start", "DROP DATABASE made_at_start")


def test_skipped_creation_gives_one_clear_error_then_writes(influx_server: InfluxServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Test that with skip_database_creation a missing database is one error naming the docs step, not one
    per failed write, and that the points are written once someone creates it."""
    async def scenario() -> None:
        settings = config(influx_server.url, database="made_by_hand", skip_database_creation=True)
        async with InfluxSink(settings, spool_dir=tmp_path) as sink:
            await write_and_wait(sink, 6)
            await asyncio.to_thread(influxql, influx_server.url, "", "CREATE DATABASE made_by_hand")
            await wait_until(lambda: sink.pending_points == 0, 15, "points written")

    try:
        run(scenario())
        assert count_points(influx_server.url, "made_by_hand", "hb") == 20
    finally:
        influxql(influx_server.url, "made_by_hand", "DROP DATABASE made_by_hand")
    [error] = errors_from_the_sink(caplog)
    assert "has no database 'made_by_hand'" in error and 'docs/deploy.md, "4.4 InfluxDB 1.x: the database"' in error
    assert "influx.skip_database_creation is set" in error


@pytest.fixture(scope="module")
def secured_influx(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """InfluxDB 1.6.7 with authentication: an admin, and a writer allowed to write one database only."""
    with InfluxServer(tmp_path_factory.mktemp("influx-auth"), extra_http="  auth-enabled = true\n") as server:
        influxql(server.url, "", f"CREATE USER {ADMIN[0]} WITH PASSWORD '{ADMIN[1]}' WITH ALL PRIVILEGES")
        yield server


def as_admin(url: str, query: str, db: str = "") -> dict[str, Any]:
    """An InfluxQL statement or query with the admin's basic auth."""
    import base64
    import json
    import urllib.parse
    import urllib.request

    body = urllib.parse.urlencode({"q": query, "db": db}).encode()
    token = base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()
    request = urllib.request.Request(f"{url}/query", data=body, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
    assert not any("error" in r for r in result.get("results", [])), result
    return result


def test_admin_account_creates_the_database(secured_influx: InfluxServer, tmp_path: Path) -> None:
    """Test that an account that may create databases gets one, with authentication on."""
    async def scenario() -> None:
        settings = config(secured_influx.url, database="by_admin", username=ADMIN[0], password=ADMIN[1])
        async with InfluxSink(settings, spool_dir=tmp_path) as sink:
            sink.submit(LINES)
            await wait_until(lambda: sink.pending_points == 0, 15, "points written")

    run(scenario())
    result = as_admin(secured_influx.url, 'SELECT count("v") FROM "hb"', "by_admin")
    assert result["results"][0]["series"][0]["values"][0][1] == 20


def test_account_that_may_not_create_gets_one_warning_and_one_error_per_problem(
        secured_influx: InfluxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Test that a non-admin account is told once that it may not create the database; that the missing
    database, then the missing write right, are one clear error each (not one per batch); and that once an
    admin has fixed both every point is written. No password appears in any of it."""
    as_admin(secured_influx.url, f"CREATE USER {WRITER[0]} WITH PASSWORD '{WRITER[1]}'")

    async def scenario() -> None:
        settings = config(secured_influx.url, database="not_yet", username=WRITER[0], password=WRITER[1])
        async with InfluxSink(settings, spool_dir=tmp_path) as sink:
            await write_and_wait(sink, 6)
            await asyncio.to_thread(as_admin, secured_influx.url, "CREATE DATABASE not_yet")
            failures = sink._failures
            await wait_until(lambda: sink._failures >= failures + 6, 15, "writes refused for want of the right")
            await asyncio.to_thread(as_admin, secured_influx.url, f"GRANT WRITE ON not_yet TO {WRITER[0]}")
            await wait_until(lambda: sink.pending_points == 0, 15, "points written")

    caplog.set_level(logging.INFO)
    run(scenario())
    warnings = [r.getMessage() for r in caplog.records if r.name == "ptmon.sinks.influx" and r.levelno == logging.WARNING
                and "may not create" in r.getMessage()]
    assert len(warnings) == 1 and "requires admin privilege" in warnings[0]
    missing, refused = errors_from_the_sink(caplog)
    assert "has no database 'not_yet'" in missing and "this account may not" in missing
    assert "refused the writes with user 'writer'" in refused and "not_yet" in refused
    assert ADMIN[1] not in caplog.text and WRITER[1] not in caplog.text


def test_a_wrong_password_is_said_to_be_one_not_a_missing_right(secured_influx: InfluxServer, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Test that credentials InfluxDB refuses (401) are reported as refused credentials, not as an account that
    may not create databases, and that the password is never shown."""
    async def scenario() -> None:
        settings = config(secured_influx.url, database="wrong_pw", username=ADMIN[0], password="not-" + ADMIN[1])
        async with InfluxSink(settings, spool_dir=tmp_path) as sink:
            await write_and_wait(sink, 3)

    caplog.set_level(logging.INFO)
    run(scenario())
    text = caplog.text
    assert "refused the credentials" in text and "may not create" not in text
    assert ADMIN[1] not in text


def test_v2_without_the_bucket_is_one_clear_error(influx_server: InfluxServer, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Test that a v2 write InfluxDB answers 404 (no such bucket; InfluxDB 1.6 has no v2 API at all) is one
    error naming the bucket, the org and the docs step, however often the write is retried."""
    async def scenario() -> None:
        settings = config(influx_server.url, api="v2", org="putuo", bucket="nowhere", token="t0ken")
        async with InfluxSink(settings, spool_dir=tmp_path) as sink:
            await write_and_wait(sink, 8)

    run(scenario())
    [error] = errors_from_the_sink(caplog)
    assert "has no bucket 'nowhere' in org 'putuo'" in error and "docs/deploy.md" in error and 'api = "v1"' in error


@pytest.mark.parametrize(("database", "statement"), [
    ("ptmon", 'CREATE DATABASE "ptmon"'),
    ('we"ird\\db', 'CREATE DATABASE "we\\"ird\\\\db"'),
], ids=["plain", "quotes-and-backslash"])
def test_create_database_statement_quotes_the_name(database: str, statement: str) -> None:
    """Test that the database name is an InfluxQL identifier in double quotes, its quotes escaped."""
    assert create_database_statement(database) == statement


@pytest.mark.parametrize(("body", "error"), [
    (b'{"results":[{"statement_id":0}]}', None),
    (b'{"results":[{"statement_id":0,"error":"requires admin privilege"}]}', "requires admin privilege"),
    (b'{"error":"unable to parse authentication credentials"}', "unable to parse authentication credentials"),
    (b"404 page not found", "404 page not found"),
], ids=["ok", "statement-error", "top-level-error", "not-json"])
def test_query_error(body: bytes, error: str | None) -> None:
    """Test that an InfluxQL answer's error is found wherever InfluxDB puts it."""
    assert query_error(body) == error
