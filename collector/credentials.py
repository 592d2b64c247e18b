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
