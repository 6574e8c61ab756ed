"""SMTP connections, kept open and reused (one transaction at a time each), and the mapping of SMTP
failures onto the error tree: 4xx replies and connection trouble are retryable, 5xx replies permanent.
A server that does not offer what the destination needs (STARTTLS, AUTH, an AUTH mechanism aiosmtplib
speaks) is a configuration error: permanent. A kept connection whose server answers MAIL with 421 (it
ends the session: a limit of messages per connection) is replaced at once, within the attempt: nothing
was sent on it.

The server's address goes through the same SSRF guard as webhooks (services.common.ssrf): the socket is
opened here, to an address that passed it, and handed to aiosmtplib, which verifies TLS (implicit or
STARTTLS) against the host name. A relay on a private network needs `allow_private: true`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from email.message import EmailMessage

import aiosmtplib

from services.common.errors import PermanentError, PostcallError, RetryableError
from services.common.ssrf import AddressRefused, Resolver, system_resolver, vetted_addresses
from services.dispatcher.destinations import SmtpDestination

IDLE_SECONDS = 30.0  # servers drop idle sessions; reconnecting is cheaper than a failed attempt


def classify_smtp(exc: Exception, deadline: float | None = None) -> PostcallError:
    """A retryable or permanent error for an aiosmtplib (or socket) failure; `deadline`: the attempt's, when
    `exc` may be its TimeoutError."""
    if deadline is not None and type(exc) is TimeoutError:
        return RetryableError(f"SMTP: no answer within the attempt's deadline of {deadline:g}s")
    if isinstance(exc, AddressRefused):
        return PermanentError(f"SSRF guard: {exc}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        refused = ", ".join(f"{r.recipient} ({r.code})" for r in exc.recipients)
        if any(400 <= c < 500 for c in codes):
            return RetryableError(f"SMTP recipients deferred: {refused}")
        return PermanentError(f"SMTP recipients refused: {refused}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        message = f"SMTP {exc.code}: {exc.message}"
        return RetryableError(message) if 400 <= exc.code < 500 else PermanentError(message)
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentError(f"SMTP server does not support what the destination requires: {exc}")
    if type(exc) is aiosmtplib.SMTPException:
        # aiosmtplib raises the base class itself only for what the server does not offer: STARTTLS, AUTH, an
        # AUTH mechanism it speaks. The destination's configuration, not the moment: hours of retry tiers
        # would end in the same dead letter
        return PermanentError(
            f"the SMTP server does not offer what the destination needs: {exc} (check its starttls, "
            "implicit_tls, port and username)"
        )
    return RetryableError(f"SMTP {type(exc).__name__}: {exc}")


class SmtpPool:
    """Connections to one SMTP destination; the destination's gate bounds how many exist."""

    def __init__(self, dest: SmtpDestination, timeout: float, resolver: Resolver = system_resolver) -> None:
        self._dest = dest
        self._timeout = timeout
        self._resolver = resolver
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def send(
        self, message: EmailMessage, recipients: list[str] | None = None
    ) -> dict[str, aiosmtplib.SMTPResponse]:
        """Send one message (to `recipients`, default: its To:); returns the recipients refused (4xx deferred
        or 5xx) while others were accepted."""
        while True:
            client, kept = await self._take()
            try:
                refused, _ = await client.send_message(message, recipients=recipients, timeout=self._timeout)
            except BaseException as exc:
                client.close()  # the session's state is unknown after a failure; never reuse it
                if kept and isinstance(exc, aiosmtplib.SMTPSenderRefused) and exc.code == 421:
                    # the server ended a session we kept (a limit of messages per connection) at MAIL,
                    # before anything was sent: another connection, within this attempt
                    continue
                raise
            self._idle.append((client, time.monotonic()))
            return dict(refused)

    async def _take(self) -> tuple[aiosmtplib.SMTP, bool]:
        """A connection, and whether it was kept from an earlier message."""
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and time.monotonic() - since < IDLE_SECONDS:
                return client, True
            await _quit(client)
        return await self._connect(), False

    async def _connect(self) -> aiosmtplib.SMTP:
        dest = self._dest
        addresses = await vetted_addresses(dest.host, dest.port, dest.allow_private, self._resolver)
        sock = await _open(dest.host, addresses, dest.port, self._timeout)
        client = aiosmtplib.SMTP(
            hostname=dest.host,  # TLS's server name; the connection is the vetted socket
            sock=sock,
            username=dest.username,
            password=dest.password_value,
            use_tls=dest.implicit_tls,
            start_tls=dest.starttls and not dest.implicit_tls,
            tls_context=dest.tls_context,
            timeout=self._timeout,
        )
        try:
            await client.connect()
        except BaseException:
            sock.close()
            raise
        return client

    async def aclose(self) -> None:
        while self._idle:
            await _quit(self._idle.pop()[0])


async def _open(host: str, addresses: list[str], port: int, timeout: float) -> socket.socket:
    """A socket connected to the first of the vetted addresses that answers."""
    loop = asyncio.get_running_loop()
    error: Exception | None = None
    for address in addresses:
        family = socket.AF_INET6 if ipaddress.ip_address(address.split("%", 1)[0]).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (address, port))
        except (OSError, TimeoutError) as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise aiosmtplib.SMTPConnectError(f"Error connecting to {host} on port {port}: {error or 'timed out'}")


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit(timeout=2)
    except (aiosmtplib.SMTPException, OSError):
        client.close()
