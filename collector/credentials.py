"""URLs that may carry credentials (``mqtt://user:password@host``): split them off, or mask them.

A password in a URL is either used (taken out of the URL here, so the URL that is kept, logged
and printed holds none) or refused with a message that says where it belongs instead. It is
never printed and never dropped silently: every message that shows a URL a person typed goes
through :func:`redact`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class UrlCredentials:
    """A URL without its user info, and what the user info held (percent-decoded)."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def split_credentials(url: str) -> UrlCredentials:
    """``scheme://user:password@host:port/path`` → the URL without ``user:password@``, user, password."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return UrlCredentials(url)
    username, colon, password = userinfo.partition(":")
    bare = parts._replace(netloc=host).geturl()
    return UrlCredentials(bare, unquote(username) or None, unquote(password) if colon else None)


def redact(url: str) -> str:
    """``url`` with user info and query masked (they may hold credentials); safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL (e.g. an unclosed '['): show only its scheme
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    _, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"***@{host}" if at else host, query="***" if parts.query else "").geturl()


MQTT_URL_FORM = "mqtt://[user[:password]@]host[:port] or mqtts://..."


@dataclass(frozen=True)
class BrokerUrl:
    """What an ``mqtt://`` / ``mqtts://`` URL says: where the broker is, TLS or not, who logs in."""

    host: str
    port: int
    secure: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def has_credentials(self) -> bool:
        return self.username is not None or self.password is not None


def parse_broker_url(url: str) -> BrokerUrl:
    """The one parser of broker URLs (configuration and command line alike); ValueError says what
    is wrong without showing the password."""
    creds = split_credentials(url)
    parts = urlsplit(creds.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment:
        raise ValueError(f"expected {MQTT_URL_FORM}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("its port is no number from 1 to 65535") from None
    if creds.password is not None and creds.username is None:
        raise ValueError("it has a password but no user name")
    secure = parts.scheme == "mqtts"
    return BrokerUrl(parts.hostname, port or (8883 if secure else 1883), secure, creds.username, creds.password)
