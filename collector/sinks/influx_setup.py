"""Getting InfluxDB ready for the sink, and saying once, clearly, what only a person can fix.

* **v1**: at start the sink runs ``CREATE DATABASE "<database>"`` (a no-op when it exists), as
  Telegraf does, unless ``influx.skip_database_creation`` is set. An account that may not
  (InfluxDB with authentication and a non-admin user) gets a single warning; the writes then tell
  whether the database exists. A database that goes missing later is created again when a write
  finds it missing.
* A write that fails because of the credentials (401/403), a missing database or a missing v2
  bucket (404) is logged **once**, with what to do and where docs/deploy.md says it, not once per
  batch: the points stay pending (memory, then the spool) and are written once it is fixed.
"""

from __future__ import annotations

import json

from ..config import InfluxConfig
from ..credentials import redact
from ..errors import SinkError

DOCS_DATABASE = 'docs/deploy.md, "4.4 InfluxDB 1.x: the database"'
DOCS_BUCKET = 'docs/deploy.md, "4.1 InfluxDB 2.x"'


def create_database_statement(database: str) -> str:
    """InfluxQL that creates ``database`` (an identifier in double quotes, its quotes escaped)."""
    escaped = database.replace("\\", "\\\\").replace('"', '\\"')
    return f'CREATE DATABASE "{escaped}"'


def query_error(body: bytes) -> str | None:
    """The ``error`` of an InfluxQL answer (top level or of a statement), None when it succeeded."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return body.decode(errors="replace")[:300] or None
    if not isinstance(doc, dict):
        return None
    if doc.get("error"):
        return str(doc["error"])
    errors = [r.get("error") for r in doc.get("results", []) if isinstance(r, dict) and r.get("error")]
    return str(errors[0]) if errors else None


def needs_a_person(exc: SinkError) -> bool:
    """Credentials or a missing database/bucket: retrying alone will not fix it."""
    return exc.retryable and exc.status in (401, 403, 404)


def advice(config: InfluxConfig, exc: SinkError, creation: str) -> str:
    """The one error line for a failure :func:`needs_a_person`; ``creation`` says how CREATE DATABASE went."""
    where = redact(config.url)
    keep = "the points are kept (memory, then the spool) and written as soon as it is fixed"
    if exc.status in (401, 403):
        who = f"user {config.username!r}" if config.api == "v1" and config.username else \
            "the token" if config.api == "v2" else "no credentials"
        return (f"InfluxDB at {where} refused the writes with {who} ({exc}): check influx.username and its password "
                f"variable (v1) or the token (v2) and the account's write right on "
                f"{config.database if config.api == 'v1' else config.bucket!r}; {keep}")
    if config.api == "v2":
        return (f"InfluxDB at {where} has no bucket {config.bucket!r} in org {config.org!r} ({exc}): create it "
                f"({DOCS_BUCKET}: influx bucket create --name {config.bucket} --org {config.org}) or set influx.bucket. "
                f"A server without the v2 API (InfluxDB 1.x before 1.8) answers 404 too: use api = \"v1\" there; {keep}")
    return (f"InfluxDB at {where} has no database {config.database!r} ({exc}) and ptmon did not create it "
            f"({creation}): create it as {DOCS_DATABASE} shows (CREATE DATABASE {config.database}), or give an "
            f"account that may; {keep}")
