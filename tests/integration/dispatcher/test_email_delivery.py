"""Emails to a real SMTP server (aiosmtpd): STARTTLS with a self-signed certificate and AUTH,
multipart text + HTML, SMTP reply codes mapped to retryable (4xx) and permanent (5xx), and recipients
deferred or refused while others were accepted (noted on the delivery, never sent to the others again)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from services.common.errors import PermanentError, RetryableError
from services.common.ssrf import AddressRefused
from services.devkit.sink import Sink
from services.dispatcher import destinations
from services.dispatcher.destinations import SmtpDestination
from services.dispatcher.smtp import SmtpPool, classify_smtp
from tests.integration.dispatcher.conftest import SECRET, Stack, email_action, self_signed


def smtp_destination(port: int, **extra: object) -> str:
    fields = {
        "host": "127.0.0.1",
        "port": port,
        "from_address": "'Postcall <postcall@example.com>'",
        "starttls": "false",
        "allow_private": "true",
        **extra,
    }
    return "destinations:\n  - name: mail\n    kind: smtp\n" + "".join(f"    {k}: {v}\n" for k, v in fields.items())


async def test_email_over_starttls_with_auth_arrives_as_text_and_html(tmp_path: Path, stack: Stack) -> None:
    context, cert = self_signed(tmp_path)
    async with Sink([SECRET], smtp_port=0, smtp_login=("postcall", "s3cret"), smtp_tls=context, quiet=True) as sink:
        assert sink.smtp_port is not None
        yaml = smtp_destination(
            sink.smtp_port, starttls="true", ca_file=cert, username="postcall", password="{secret_env: SMTP_PASSWORD}"
        )
        async with stack(yaml, {"SMTP_PASSWORD": "s3cret"}) as (executors, _):
            delivery = await executors.run(email_action("act_mail", html="<p>callback</p>"))
    assert delivery.outcome == "delivered"
    [got] = sink.received
    assert got["webhook_id"] == "act_mail" and got["tls"] is True
    assert got["to"] == ["support@example.com", "lead@example.com"]
    assert got["subject"] == "Callback requested"
    assert got["text"].strip() == "+4930123 asked for a callback."
    assert got["html"].strip() == "<p>callback</p>"
    assert got["message_id"] == "<act_mail@postcall>"


async def test_wrong_smtp_password_is_permanent(tmp_path: Path, stack: Stack) -> None:
    context, cert = self_signed(tmp_path)
    async with Sink([], smtp_port=0, smtp_login=("postcall", "s3cret"), smtp_tls=context, quiet=True) as sink:
        assert sink.smtp_port is not None
        yaml = smtp_destination(
            sink.smtp_port, starttls="true", ca_file=cert, username="postcall", password="{secret_env: SMTP_PASSWORD}"
        )
        async with stack(yaml, {"SMTP_PASSWORD": "wrong"}) as (executors, _):
            with pytest.raises(PermanentError, match="535"):
                await executors.run(email_action("act_mail"))
    assert sink.received == []


async def test_server_certificate_not_trusted_is_retryable_and_nothing_is_sent(tmp_path: Path, stack: Stack) -> None:
    context, _ = self_signed(tmp_path)
    async with Sink([], smtp_port=0, smtp_tls=context, quiet=True) as sink:
        assert sink.smtp_port is not None
        yaml = smtp_destination(sink.smtp_port, starttls="true")
        async with stack(yaml) as (executors, _):
            with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await executors.run(email_action("act_mail"))
    assert sink.received == []


async def test_plain_smtp_email_is_delivered_and_the_connection_reused(sink: Sink, stack: Stack) -> None:
    assert sink.smtp_port is not None
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        for i in range(3):
            assert (await executors.run(email_action(f"act_{i}"))).outcome == "delivered"
    assert sink.ids() == ["act_0", "act_1", "act_2"]
    assert all(r["tls"] is False and r["html"] is None for r in sink.received)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("451 4.3.0 Try again later", RetryableError),
        ("452 4.2.2 Mailbox full", RetryableError),
        ("554 5.7.1 Message rejected", PermanentError),
        ("552 5.3.4 Message too big", PermanentError),
    ],
)
async def test_smtp_reply_codes_decide_retry(sink: Sink, stack: Stack, reply: str, error: type[Exception]) -> None:
    assert sink.smtp_port is not None
    sink.smtp_replies.append(reply)
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(error, match=reply.split()[0]):
            await executors.run(email_action("act_1"))
        assert (await executors.run(email_action("act_1"))).outcome == "delivered"


async def test_smtp_server_down_is_retryable(stack: Stack) -> None:
    from services.devkit.kafka import free_port

    async with stack(smtp_destination(free_port())) as (executors, _):
        with pytest.raises(RetryableError):
            await executors.run(email_action("act_1"))


@pytest.mark.parametrize(
    "update",
    [{"subject": "Callback requested\n"}, {"to": ["support@example.com\r\n"]}, {"conversation_id": "conv-1\n"}],
)
async def test_a_header_value_ending_in_a_line_break_is_refused(sink: Sink, stack: Stack, update: Any) -> None:
    """EmailMessage refuses a line break inside a header value but not at its end, where it wrote a blank
    line that ended the header block: the headers after it (Message-ID, MIME) went into the body."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update=update)
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match=r"invalid email: the \w[\w-]* header has a line break"):
            await executors.run(action)
    assert sink.received == []


@pytest.mark.parametrize("subject", ["Callback\x00requested", "Callback \x1b[2Jrequested", "Callback\x85"])
async def test_a_subject_with_a_control_character_is_refused(sink: Sink, stack: Stack, subject: str) -> None:
    """EmailMessage wrote a NUL or an ESC into the Subject as it was (SMTP forbids a NUL in a message); the
    router writes none, a record from elsewhere may."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update={"subject": subject})
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match=r"invalid email: the Subject header has a control character"):
            await executors.run(action)
    assert sink.received == []


@pytest.mark.parametrize(
    ("update", "header"),
    [
        ({"subject": "Hi =?utf-8?q?=0D=0ABcc:_everyone@example.com?="}, "Subject"),
        ({"subject": "=?utf-8?b?SGkNCg0KWW91ciBhY2NvdW50IGlzIGxvY2tlZA==?="}, "Subject"),  # a body of its own
        ({"subject": "Hi =?utf-8?q?a=00b?="}, "Subject"),
        ({"conversation_id": "conv=?utf-8?q?=0D=0AReply-To:_thief@example.net?="}, "X-Postcall-Conversation-Id"),
    ],
)
async def test_a_line_break_or_control_character_in_an_encoded_word_is_refused_unsent(
    sink: Sink, stack: Stack, update: dict[str, str], header: str
) -> None:
    """EmailMessage decodes the RFC 2047 encoded words of a value it is given (=?utf-8?q?=0D=0A?= is CR LF)
    and wrote what they decoded to as it was: a caller's subject text added a Bcc or Reply-To header, or a
    blank line and a body of its own. The value checked was the encoded one, which holds no line break."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update=update)
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match=rf"invalid email: the {header} header has a (line break|control)"):
            await executors.run(action)
    assert sink.received == []


@pytest.mark.parametrize(
    "to",
    [
        [""],
        ["support@example.com", " "],
        ["support@example.com, everyone@example.com"],
        ['"Support" <support@example.com>, everyone@example.com'],
        ["undisclosed-recipients:;"],
        ["support@"],  # CPython's parser raises IndexError on it: an unknown error, retried
    ],
)
async def test_a_recipient_that_is_not_one_address_is_refused_unsent(sink: Sink, stack: Stack, to: list[str]) -> None:
    """aiosmtplib sends to every address the To: header parses to: an entry with a comma reached a second
    recipient the record did not list as one, and an empty entry (or a group) was no recipient at all,
    a ValueError classed retryable: hours of retry tiers before the dead letter."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update={"to": to})
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match="invalid email: a recipient is not one address"):
            await executors.run(action)
    assert sink.received == []


async def test_a_recipient_on_an_internationalised_domain_is_delivered_without_smtputf8(
    sink: Sink, stack: Stack
) -> None:
    """'ops@bücher.de' (the router's address check takes it) made aiosmtplib require SMTPUTF8, which this
    server (aiosmtpd's default), like many relays, does not offer: SMTPNotSupported, a permanent error, for
    an address every server can take in its DNS form. Its domain now goes in IDNA form (xn--); an address
    whose own part is not ASCII still needs SMTPUTF8."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update={"to": ["ops@bücher.de", "Straße <desk@straße.de>"]})
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        assert (await executors.run(action)).outcome == "delivered"
        with pytest.raises(PermanentError, match="SMTPUTF8"):
            await executors.run(email_action("act_2").model_copy(update={"to": ["josé@example.com"]}))
        # what the parser calls defective but a server may take is the server's to judge, as before
        assert (await executors.run(email_action("act_3").model_copy(update={"to": ["a.@example.com"]}))).outcome
    first, second = sink.received
    assert first["to"] == ["ops@xn--bcher-kva.de", "desk@xn--strae-oqa.de"]
    assert second["to"] == ["a.@example.com"]


async def test_a_sender_on_an_internationalised_domain_goes_in_its_dns_form(sink: Sink, stack: Stack) -> None:
    assert sink.smtp_port is not None
    async with stack(smtp_destination(sink.smtp_port, from_address="'Bücher <calls@bücher.de>'")) as (executors, _):
        assert (await executors.run(email_action("act_1"))).outcome == "delivered"
    assert sink.received[0]["sender"] == "calls@xn--bcher-kva.de"


async def test_header_injection_in_subject_is_refused(sink: Sink, stack: Stack) -> None:
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update={"subject": "Hi\r\nBcc: everyone@example.com"})
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match="invalid email"):
            await executors.run(action)
    assert sink.received == []


class Recipients:
    """An aiosmtpd handler that answers RCPT for some addresses with scripted replies, and keeps the mail."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies  # address -> replies to its next RCPTs; "250" when none are left
        self.mail: list[list[str]] = []  # the accepted recipients of each message

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        queued = self.replies.get(address)
        if queued:
            return queued.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_server(handler: object, tls: ssl.SSLContext | None = None, **options: Any) -> AsyncIterator[int]:
    """aiosmtpd on a free port of 127.0.0.1; `options`: its SMTP's (what the server offers)."""
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(handler, **options), "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_recipient_still_deferred_after_others_took_the_mail_is_reported_never_resent_to_them(
    stack: Stack,
) -> None:
    """Before: the attempt was retryable, and the retry sent the message to every recipient again, so
    support@ had it twice (once per attempt, for as long as lead@'s mailbox stayed full)."""
    # deferred twice: in the message's transaction and in the one of its own that follows at once
    handler = Recipients({"lead@example.com": ["452 4.2.2 Mailbox full", "452 4.2.2 Mailbox full"]})
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        delivery = await executors.run(email_action("act_1"))
    assert delivery.outcome == "delivered" and delivery.note is not None
    assert delivery.note.startswith("not delivered to lead@example.com (452 4.2.2 Mailbox full)"), delivery.note
    assert "not retried" in delivery.note
    assert handler.mail == [["support@example.com"]]


async def test_a_recipient_refused_for_good_while_others_accepted_is_noted_on_the_delivery(stack: Stack) -> None:
    handler = Recipients({"lead@example.com": ["550 5.1.1 No such user"]})
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        delivery = await executors.run(email_action("act_1"))
    assert delivery.outcome == "delivered"
    assert delivery.note is not None and "lead@example.com (550" in delivery.note
    assert handler.mail == [["support@example.com"]]


async def test_an_smtp_host_on_a_private_address_is_refused_without_allow_private(sink: Sink, stack: Stack) -> None:
    assert sink.smtp_port is not None
    async with stack(smtp_destination(sink.smtp_port, allow_private="false")) as (executors, _):
        with pytest.raises(PermanentError, match=r"SSRF guard: .*127\.0\.0\.1 \(loopback\)"):
            await executors.run(email_action("act_1"))
    assert sink.received == []


async def test_an_smtp_host_resolving_to_a_metadata_address_is_refused_even_with_allow_private() -> None:
    async def metadata(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    [dest] = destinations.parse(smtp_destination(25), {}).values()
    assert isinstance(dest, SmtpDestination) and dest.allow_private
    pool = SmtpPool(dest, 5.0, resolver=metadata)
    with pytest.raises(AddressRefused, match="cloud metadata endpoint"):
        await pool.send(EmailMessage())
    assert isinstance(classify_smtp(AddressRefused("x")), PermanentError)


async def test_implicit_tls_over_the_vetted_socket_is_delivered_by_host_name(tmp_path: Path, stack: Stack) -> None:
    context, cert = self_signed(tmp_path)  # names 127.0.0.1 and localhost
    handler = Recipients({})
    async with smtp_server(handler, tls=context) as port:
        yaml = smtp_destination(port, host="localhost", implicit_tls="true", ca_file=cert)
        async with stack(yaml) as (executors, _):
            assert (await executors.run(email_action("act_1"))).outcome == "delivered"
    assert handler.mail == [["support@example.com", "lead@example.com"]]


class DropsAfterData:
    """Takes the first message, then drops the connection instead of answering 250; takes the next ones."""

    def __init__(self) -> None:
        self.mail: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        if len(self.mail) == 1:
            server.transport.abort()
        return "250 Message accepted for delivery"


async def test_a_message_whose_250_is_lost_is_sent_again_with_the_same_message_id(stack: Stack) -> None:
    # what the receiving side can drop the repeat by (docs/downstream.md, Deduplication)
    handler = DropsAfterData()
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        with pytest.raises(RetryableError, match="SMTPServerDisconnected"):
            await executors.run(email_action("act_1"))
        assert (await executors.run(email_action("act_1"))).outcome == "delivered"
    first, second = handler.mail
    assert first["Message-ID"] == second["Message-ID"] == "<act_1@postcall>"
    assert first["X-Postcall-Action-Id"] == second["X-Postcall-Action-Id"] == "act_1"


class Keeps:
    """Takes every message and keeps it."""

    def __init__(self) -> None:
        self.mail: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mail.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


@pytest.mark.parametrize(("setting", "marked"), [({}, False), ({"auto_submitted": "true"}, True)])
async def test_an_email_says_a_machine_sent_it_only_when_its_destination_says_so(
    stack: Stack, setting: dict[str, str], marked: bool
) -> None:
    """d84b94e put Auto-Submitted: auto-generated and X-Auto-Response-Suppress: All on every email, to stop
    help desks' acknowledgements; but a help desk reads them as an auto-reply and makes no ticket (Zendesk
    suspends the mail, Jira Service Management rejects it) while the server answered 250: the support queue
    of examples/agents/support-line.yaml would have lost every email, reported delivered."""
    handler = Keeps()
    async with smtp_server(handler) as port, stack(smtp_destination(port, **setting)) as (executors, _):
        assert (await executors.run(email_action("act_1"))).outcome == "delivered"
    [got] = handler.mail
    expected = {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"} if marked else {}
    assert {k: str(v) for k, v in got.items() if k in ("Auto-Submitted", "X-Auto-Response-Suppress")} == expected


class RecipientLimit(Recipients):
    """A server that takes at most `limit` RCPTs per transaction and answers the rest 452 4.5.3 (RFC 5321
    4.5.3.1.10: the client sends the remaining recipients in another transaction)."""

    def __init__(self, limit: int, code: str = "452 4.5.3 Too many recipients") -> None:
        super().__init__({})
        self.limit, self.code = limit, code

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if len(envelope.rcpt_tos) >= self.limit:
            return self.code
        return await super().handle_RCPT(server, session, envelope, address, options)


@pytest.mark.parametrize("code", ["452 4.5.3 Too many recipients", "552 5.5.3 Too many recipients"])
async def test_recipients_over_the_servers_limit_per_message_go_in_another_transaction_at_once(
    stack: Stack, code: str
) -> None:
    """Before: the recipients past the limit were 'deferred' (452) and the attempt retryable, and every retry
    sent to every recipient again, where the same limit deferred the same ones: the first recipients got the
    mail once per attempt and the others never; a 552 (RFC 821's code for it, which RFC 5321 says to treat as
    temporary) noted them as refused for good."""
    handler = RecipientLimit(2, code)
    action = email_action("act_1").model_copy(update={"to": [f"r{i}@example.com" for i in range(5)]})
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        delivery = await executors.run(action)
    assert (delivery.outcome, delivery.note) == ("delivered", None)
    r0, r1, r2, r3, r4 = action.to
    assert handler.mail == [[r0, r1], [r2, r3], [r4]]


class FailsItsSecondTransaction(RecipientLimit):
    """Takes one recipient per transaction (452 to the others); the second transaction then fails: its
    DATA answered 554, or the connection dropped at its RCPT."""

    def __init__(self, how: str) -> None:
        super().__init__(1)
        self.how = how

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.how == "drop" and self.mail:
            server.transport.abort()
        return await super().handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.mail:
            return "554 5.7.1 Message refused"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(
    ("how", "why"),
    [("554", "SMTP 554: 5.7.1 Message refused"), ("drop", "SMTP SMTPServerDisconnected: ")],
)
async def test_a_later_transaction_that_fails_after_the_first_took_the_mail_is_reported_not_failed(
    stack: Stack, how: str, why: str
) -> None:
    """Before: the second transaction's failure failed the whole action, though the first recipient had the
    mail: a 554 dead-lettered it as not delivered, and a lost connection retried it, sending it to that
    recipient again."""
    handler = FailsItsSecondTransaction(how)
    action = email_action("act_1").model_copy(
        update={"to": ["support@example.com", "lead@example.com", "ops@example.com"]}
    )
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        delivery = await executors.run(action)
    assert delivery.outcome == "delivered" and delivery.note is not None
    assert delivery.note.startswith(f"not delivered to lead@example.com, ops@example.com ({why}"), delivery.note
    assert delivery.note.count(why) == 1  # the error once, however many recipients it was for
    assert handler.mail == [["support@example.com"]]


class MessagesPerConnection(Recipients):
    """A server that takes `limit` messages per connection and answers the next MAIL 421 (Exchange's
    MaxMessagesPerConnection, Postfix's per-session limits), closing the session."""

    def __init__(self, limit: int) -> None:
        super().__init__({})
        self.limit = limit
        self.sessions: dict[int, int] = {}  # id(session) -> messages taken on it

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.sessions.get(id(session), 0) >= self.limit:
            return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions[id(session)] = self.sessions.get(id(session), 0) + 1
        return await super().handle_DATA(server, session, envelope)


async def test_a_kept_connection_the_server_ends_with_421_is_replaced_within_the_attempt(stack: Stack) -> None:
    """Before: the message after the server's per-connection limit failed its attempt (SMTPSenderRefused 421,
    retryable: five seconds in a retry tier, a failure counted against the destination's circuit), though
    nothing had been sent and a new connection takes it at once."""
    handler = MessagesPerConnection(1)
    async with smtp_server(handler) as port, stack(smtp_destination(port)) as (executors, _):
        for n in range(3):
            assert (await executors.run(email_action(f"act_{n}"))).outcome == "delivered"
    assert len(handler.mail) == 3 and len(handler.sessions) == 3


@pytest.mark.parametrize(
    ("update", "why"),
    [
        ({"subject": "wörd " * 20_000}, "the Subject is 100,000 characters, over 1,000"),
        ({"to": [f"r{i}@example.com" for i in range(1001)]}, "1,001 recipients, over 1,000"),
    ],
)
async def test_a_subject_or_a_recipient_list_past_any_router_output_is_refused_before_it_is_built(
    sink: Sink, stack: Stack, update: dict[str, Any], why: str
) -> None:
    """EmailMessage folds a Subject in CPU time that grows faster than its length (100,000 characters: about
    1 s; 1,000,000: 27 s, /tmp/r15b) and parses a recipient in about 190 us, all on the event loop: an action
    record of a few MiB (under max_record_bytes) stopped the dispatcher for minutes, its heartbeats with it.
    The router writes a Subject of at most 250 characters, and the recipients its agent file names."""
    assert sink.smtp_port is not None
    action = email_action("act_1").model_copy(update=update)
    async with stack(smtp_destination(sink.smtp_port)) as (executors, _):
        with pytest.raises(PermanentError, match=f"invalid email: {why}"):
            await executors.run(action)
    assert sink.received == []


class SlowToAnswerData(Recipients):
    """Takes the message, then answers the end of DATA `delay` seconds later (a relay scanning content)."""

    def __init__(self, delay: float) -> None:
        super().__init__({})
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


async def test_an_smtp_relay_slower_than_the_webhooks_deadline_to_answer_data_is_waited_for(stack: Stack) -> None:
    """Before: an smtp destination had the webhooks' whole-attempt deadline (default_timeout_seconds, 15 s),
    though RFC 5321 4.5.3.2 gives a server 10 minutes to answer the end of DATA. A relay that answered later
    had taken the message; the attempt timed out, and the retry sent it again. Here webhooks get 1 s."""
    handler = SlowToAnswerData(2.0)
    async with (
        smtp_server(handler) as port,
        stack(smtp_destination(port), default_timeout_seconds=1, runtime={"handler_timeout_seconds": 30}) as (
            executors,
            registry,
        ),
    ):
        [dest] = registry.smtp()
        assert registry.timeout(dest) == 30 - 3 * 0.5 - 10  # the handler's time, less the gate's waits and a reserve
        assert (await executors.run(email_action("act_1"))).outcome == "delivered"
    assert handler.mail == [["support@example.com", "lead@example.com"]]


class OffersOnlyGssapi(Recipients):
    """A server whose only AUTH mechanism is one aiosmtplib does not speak."""

    async def auth_GSSAPI(self, server: Any, args: list[str]) -> Any:
        return None


def _anyone(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    return AuthResult(success=True)


@pytest.mark.parametrize(
    ("handler", "options", "destination", "why"),
    [
        (Recipients({}), {}, {"starttls": "true"}, "SMTP STARTTLS extension not supported by server"),
        (
            Recipients({}),
            {},
            {"username": "postcall", "password": "{secret_env: PW}"},
            "The SMTP AUTH extension is not supported",
        ),
        (
            OffersOnlyGssapi({}),
            {"authenticator": _anyone, "auth_require_tls": False, "auth_exclude_mechanism": ["LOGIN", "PLAIN"]},
            {"username": "postcall", "password": "{secret_env: PW}"},
            "No suitable authentication method found",
        ),
    ],
    ids=["no-starttls", "no-auth", "no-auth-mechanism-we-speak"],
)
async def test_a_server_not_offering_what_the_destination_needs_is_a_permanent_configuration_error(
    stack: Stack, handler: Recipients, options: dict[str, Any], destination: dict[str, str], why: str
) -> None:
    """Before: retryable ('SMTP SMTPException: ...'), so every email to a misconfigured destination went
    through the retry tiers for hours before its dead letter, and the destination's circuit counted failures."""
    async with (
        smtp_server(handler, **options) as port,
        stack(smtp_destination(port, **destination), {"PW": "pw"}) as (
            executors,
            _,
        ),
    ):
        with pytest.raises(PermanentError, match=f"the SMTP server does not offer what the destination needs: {why}"):
            await executors.run(email_action("act_1"))
    assert handler.mail == []
