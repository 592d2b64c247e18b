"""What every config section shares: one declaration per key, checked the same way from a file,
from code and from the command line."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from pydantic import ConfigDict, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from .fields import FileContext, env_name, file_context, invalid, refused

# extra="forbid": a misspelt keyword fails in code too, not only in a file.
SECTION = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a bad URL may hold a password


@dataclass(frozen=True, kw_only=True, config=SECTION)
class Section:
    """A table of ptmon.toml: a frozen dataclass whose fields are its keys.

    ``file_only`` keys are read from the file but are no attribute (``url``, ``password_env``);
    ``code_only`` attributes never come from the file (a password, the file's own path).
    ``from_file`` turns the first into the second; ``check`` holds the cross-key rules.
    """

    table: ClassVar[str] = ""  # "mqtt", "mqtt.tls"; "" for the top level
    file_only: ClassVar[tuple[str, ...]] = ()
    code_only: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def file_keys(cls) -> tuple[str, ...]:
        """The keys its table may hold in ptmon.toml, sorted."""
        fields = dataclasses.fields(cls)
        names = {field.name for field in fields} - set(cls.code_only)
        return tuple(sorted(names | set(cls.file_only)))

    @model_validator(mode="wrap")
    @classmethod
    def _validate(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        context = file_context(info)
        if context is not None and isinstance(data, dict):
            known = cls.file_keys()
            unknown = sorted(key for key in data if key not in known)
            if unknown:  # before any value is read: a typo is the likeliest fault
                raise refused(f"is not a known key; known: {', '.join(known)}", key=unknown[0])
            data = cls.from_file(dict(data), context)
        section = handler(data)
        given = data if isinstance(data, dict) else {}
        if isinstance(data, ArgsKwargs):  # built in code: MqttConfig(host=...)
            given = data.kwargs or {}
        section.check(given)
        return section

    @classmethod
    def from_file(cls, data: dict[str, Any], context: FileContext) -> dict[str, Any]:
        """The table's keys as the fields' keywords (secrets looked up, defaults that hang on
        other keys filled in)."""
        return data

    def check(self, given: dict[str, Any]) -> None:
        """Rules across keys; ``given`` holds the values as written, for the message."""

    def fail(self, key: str, expected: str, given: dict[str, Any]) -> Exception:
        return invalid(expected, given.get(key, getattr(self, key)), key=key)


def credentials(data: dict[str, Any], table: str, default_env: str, context: FileContext, *,
                wanted: bool) -> None:
    """``username`` and the password from the variable ``password_env`` names, in place.

    Without ``password_env`` the password comes from ``default_env`` when that is set.
    """
    username = data.get("username")
    named = data.pop("password_env", None)
    has_user = isinstance(username, str) and username != ""
    if not has_user and named is not None:
        raise invalid(f"given with {table}.username", named, key="password_env")
    data["password"] = secret(named, "password_env", default_env, context,
                              wanted=wanted and has_user)


def secret(named: Any, key: str, default_env: str, context: FileContext, *, wanted: bool,
           required: bool = False) -> str | None:
    """The value of the variable ``named`` (``default_env`` when None); a variable named
    explicitly must be set, as must the default one when ``required``."""
    named = env_name(named, key)
    if not wanted:
        return None
    value = context.env.get(named or default_env) or None
    if value is None and (required or named is not None):
        raise invalid("the name of a set, non-empty environment variable", named or default_env,
                      key=key)
    return value
