"""How points reach InfluxDB: one body per call, through the 1.x ``/write`` API or
influxdb-client's v2 API, and what each answer means for the batch (retry, split, give up)."""

from __future__ import annotations

import base64
import gzip
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Protocol, cast

from ..config import InfluxConfig
from ..credentials import redact, split_credentials
from ..errors import ConfigError, SinkError
from .influx_setup import create_database_statement, query_error


class Transport(Protocol):
    """Sends one body; raises ``SinkError`` saying what to do. Called in a worker thread.

    A transport with ``self_compressing = True`` compresses by itself and wants plain bodies.
    """

    def write(self, body: bytes, *, gzipped: bool) -> None: ...


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify(status: int, message: str, retry_after: str | None = None) -> SinkError:
    """The SinkError for a non-2xx answer, by what the sink should do with the batch."""
    text = f"InfluxDB answered {status}: {' '.join(message.split())[:500]}"
    if status == 413:
        # the body exceeds the server's max-body-size: halves of it may fit
        return SinkError(text, retryable=False, status=status, too_large=True)
    if status in (400, 422):
        # the data itself is bad (parse error, type conflict, partial write): it never will be written
        return SinkError(text, retryable=False, status=status)
    if status == 429 or status >= 500:
        # overloaded or failing server: the same batch goes through later
        return SinkError(text, retryable=True, status=status, retry_after=_retry_after(retry_after))
    # 401/403/404 (credentials, missing database) and the unexpected: a config fix must not lose data
    return SinkError(text, retryable=True, status=status)


class V1Transport:
    """POST ``/write`` (InfluxDB 1.x, and the 1.x compatibility API of 2.x/3.x)."""

    def __init__(self, config: InfluxConfig) -> None:
        # user:password@ in the URL (a caller that did not split it off) is used, never sent as a host name
        creds = split_credentials(config.url)
        if urllib.parse.urlsplit(creds.url).scheme not in ("http", "https"):
            raise ConfigError(f"influx.url must be http:// or https://: {redact(config.url)!r}")
        params = {"db": config.database, "precision": "u"}
        if config.retention_policy:
            params["rp"] = config.retention_policy
        base = creds.url.rstrip("/")
        self.url = f"{base}/write?{urllib.parse.urlencode(params)}"
        self.query_url = f"{base}/query"
        self.headers = {"Content-Type": "text/plain; charset=utf-8"}
        username, password = (config.username, config.password) if config.username else (creds.username, creds.password)
        if username:
            user = f"{username}:{password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(user).decode()
        self.database = config.database
        self.timeout = config.timeout
        # environment proxies are for people's browsers, not for the path to the database
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def write(self, body: bytes, *, gzipped: bool) -> None:
        headers = {**self.headers, "Content-Encoding": "gzip"} if gzipped else self.headers
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise classify(exc.code, _error_text(exc), exc.headers.get("Retry-After")) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, a cut-short answer
            # the server is away or the network is: the batch is fine
            raise SinkError(f"InfluxDB unreachable: {getattr(exc, 'reason', exc)}", retryable=True) from exc


    def create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op when it exists); SinkError when refused or unreachable."""
        body = urllib.parse.urlencode({"q": create_database_statement(self.database)}).encode()
        headers = {**self.headers, "Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(self.query_url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                error = query_error(response.read())
        except urllib.error.HTTPError as exc:
            raise SinkError(f"InfluxDB answered {exc.code}: {query_error(exc.read()) or exc.reason}", retryable=True,
                            status=exc.code) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise SinkError(f"InfluxDB unreachable: {getattr(exc, 'reason', exc)}", retryable=True) from exc
        if error:  # InfluxDB 1.x answers 200 with the statement's error (e.g. "requires admin privilege")
            status = 403 if "authoriz" in error or "privilege" in error else 400
            raise SinkError(f"InfluxDB refused CREATE DATABASE: {error}", retryable=True, status=status)


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return str(exc.reason)


class V2Transport:
    """influxdb-client's ``/api/v2/write`` (InfluxDB 2.x, 1.8+, 3.x; VictoriaMetrics)."""

    self_compressing = True  # the client gzips itself when enable_gzip

    def __init__(self, config: InfluxConfig) -> None:
        from influxdb_client import InfluxDBClient, WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS

        if split_credentials(config.url).username is not None:
            raise ConfigError(f"influx.url holds credentials ({redact(config.url)}), but the v2 API authenticates "
                              "with a token: put it in $PTMON_INFLUX_TOKEN and give the URL without user:password@")
        self._client = InfluxDBClient(url=config.url, token=cast(str, config.token), org=config.org,
                                      enable_gzip=config.gzip, timeout=int(config.timeout * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org, self._precision = config.bucket, config.org, WritePrecision.US

    def write(self, body: bytes, *, gzipped: bool) -> None:
        import urllib3
        from influxdb_client.rest import ApiException

        if gzipped:
            body = gzip.decompress(body)  # the client compresses (again) by itself
        try:
            self._write_api.write(self._bucket, self._org, record=body,
                                  write_precision=self._precision)  # type: ignore[arg-type]  # its members are str
        except ApiException as exc:
            raise classify(int(exc.status or 0), str(exc.message or exc.reason), exc.retry_after) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # the server is away or the network is: the batch is fine
            raise SinkError(f"InfluxDB unreachable: {exc}", retryable=True) from exc

    def close(self) -> None:
        self._client.close()


def make_transport(config: InfluxConfig) -> Transport:
    return V2Transport(config) if config.api == "v2" else V1Transport(config)


def failure_reason(exc: SinkError) -> str:
    """The ``reason`` label of ``ptmon_influx_failures``."""
    if exc.too_large:
        return "too_large"
    if exc.status is None:
        return "network"
    if exc.status == 429:
        return "throttled"
    if exc.status >= 500:
        return "server_error"
    if exc.status in (401, 403, 404):
        return "config"
    return "other" if exc.retryable else "rejected"
