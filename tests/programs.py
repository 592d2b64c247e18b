"""The Debian programs the integration tests run, and the package each comes in.

A test whose program is missing fails with one line naming the package (``scripts/test``
installs them all), never with a bare ``FileNotFoundError`` from deep in a fixture.
"""

from __future__ import annotations

import os
import shutil

import pytest

PACKAGES = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "mosquitto_sub": "mosquitto-clients",
    "influxd": "influxdb",
    "victoria-metrics": "victoria-metrics",
    "pdftoppm": "poppler-utils",
    "pdftotext": "poppler-utils",
    "openssl": "openssl",
}
SYSTEM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")  # daemons live in sbin, often not on a user's PATH


def find(name: str) -> str | None:
    """The path of program ``name``, or None."""
    return shutil.which(name) or next(
        (path for d in SYSTEM_DIRS if os.access(path := os.path.join(d, name), os.X_OK)), None)


def missing_message(name: str) -> str:
    return (f"{name} is not installed: apt-get install {PACKAGES[name]} "
            "(scripts/test installs every package the tests need)")


def program(name: str) -> str:
    """The path of Debian program ``name``; fails the calling test with one line when it is missing."""
    path = find(name)
    if path is None:
        pytest.fail(missing_message(name), pytrace=False)
    return path
