"""A real SMTP server (aiosmtpd) on a loopback port, collecting what it is sent."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from ptmon.simulators.loopback import free_port


class Inbox:
    """aiosmtpd handler: every accepted message, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(email.message_from_bytes(envelope.original_content, policy=default))  # type: ignore[arg-type]
        return "250 OK"


class SmtpServer:
    """``login``: (user, password) the server requires (AUTH without TLS, as on a closed test network)."""

    def __init__(self, port: int | None = None, *, login: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.inbox = Inbox()
        self.login = login
        self.logins: list[str] = []  # user names that logged in
        self.controller: Controller | None = None

    def start(self) -> SmtpServer:
        if self.login is None:
            self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        else:
            self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, auth_required=True,
                                         auth_require_tls=False, authenticator=self._authenticate)
        self.controller.start()
        return self

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(), auth_data.password.decode()) == self.login
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
