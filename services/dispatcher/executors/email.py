"""email: a text (and optional HTML) message through an `smtp` destination.

The Message-ID is derived from the action_id, so an MTA or mailbox that sees a repeat can tell; the
action_id is also in X-Postcall-Action-Id for the receiving side's own dedupe. A destination with
auto_submitted says its messages were sent by a machine (Auto-Submitted: auto-generated, RFC 3834, and
Exchange's X-Auto-Response-Suppress), so out-of-office replies are not sent back; off by default, since
help desks (Zendesk, Jira Service Management) drop such mail instead of making a ticket of it.

Recipients the server refuses while accepting others: those it did not take for now (4xx; or 552, RFC
821's code for too many recipients, which RFC 5321 4.5.3.1.10 says to treat as temporary) go in another
transaction at once, while the last one took someone: a server's limit of recipients per message
answers 452 to the ones past it. Once the server has taken the message for one recipient, the action is
`delivered` and is never attempted again, since a retry would send the message again to those who have it:
what did not reach the others (a 5xx refusal; a 4xx still standing; a later transaction that failed or
ran out of time) is listed in the delivery's note. Retrying only the others would need a record of who
got it that survives a restart or a move to another replica. An attempt in which nobody took the message
fails as its error says (4xx and lost connections retryable, 5xx permanent), and its retry goes to
everyone: nobody has it (a message whose 250 was lost may be repeated, with the same Message-ID
<action_id@postcall>, which mail systems that dedupe drop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate

import idna  # httpx's dependency (requirements/runtime.lock), as it names hosts
from aiosmtplib import SMTPRecipientsRefused, SMTPResponse

from schemas.events import EmailRequested
from services.common.codec import CONTROL_CHARACTERS
from services.common.errors import PermanentError, PostcallError, RetryableError
from services.dispatcher.delivery import Delivery, failure
from services.dispatcher.destinations import SmtpDestination
from services.dispatcher.metrics import delivery_duration
from services.dispatcher.registry import Registry
from services.dispatcher.smtp import SmtpPool, classify_smtp

# EmailMessage folds a Subject in CPU time that grows faster than its length (1,000,000 characters: 27 s)
# and parses a recipient in about 190 us, on the event loop: bounds well past what the router writes (a
# Subject of at most 250 characters, the recipients an agent file names) keep a record from elsewhere
# from stopping the dispatcher, its Kafka heartbeats with it
SUBJECT_CHARS = 1000
RECIPIENTS = 1000


def build_message(action: EmailRequested, sender: str, *, auto_submitted: bool = False) -> EmailMessage:
    """The message; ValueError when a header would carry a line break (header injection), a recipient
    is not one address, or the Subject or the recipients are past their bounds. `auto_submitted`: the
    destination's (the RFC 3834 and Exchange headers)."""
    if len(action.subject) > SUBJECT_CHARS:
        raise ValueError(f"the Subject is {len(action.subject):,} characters, over {SUBJECT_CHARS:,}")
    if len(action.to) > RECIPIENTS:
        raise ValueError(f"{len(action.to):,} recipients, over {RECIPIENTS:,} in one email")
    if any("\r" in value or "\n" in value for value in action.to):
        raise ValueError("the To header has a line break")
    recipients = [address for address in map(one_address, action.to) if address is not None]
    if len(recipients) != len(action.to):
        raise ValueError("a recipient is not one address")
    headers = {
        "From": str(one_address(sender) or sender),  # checked at load; its domain in IDNA form too
        "To": ", ".join(map(str, recipients)),  # what was checked, domains in IDNA form
        "Subject": action.subject,
        "Date": formatdate(usegmt=True),
        "Message-ID": f"<{action.action_id}@postcall>",
        "X-Postcall-Action-Id": action.action_id,
        "X-Postcall-Conversation-Id": action.conversation_id,
    }
    if auto_submitted:
        headers |= {"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"}
    if action.supersedes is not None:  # a deliberate re-delivery (RFC 2156 Supersedes)
        headers["Supersedes"] = f"<{action.supersedes}@postcall>"
    msg = EmailMessage()
    for name, value in headers.items():
        _one_line(name, value)
        msg[name] = value
        # the value it will write: EmailMessage decodes the RFC 2047 encoded words of what it is given
        # (=?utf-8?q?=0D=0A?= is CR LF), and the router's one_line leaves their text as it is
        decoded = str(msg[name])
        if decoded != value:
            _one_line(name, decoded, " (an RFC 2047 encoded word decodes to it)")
    msg.set_content(action.text)
    if action.html:
        msg.add_alternative(action.html, subtype="html")
    return msg


def _one_line(name: str, value: str, how: str = "") -> None:
    """ValueError when a header's value has a line break or a control character. EmailMessage refuses a
    line break inside a value but not at its end, where it would write the blank line that ends the
    header block; another control character (a NUL, which SMTP forbids, an ESC) it writes as it is. The
    router writes none (its one_line); a record from elsewhere may."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header has a line break{how}")
    if not value.isprintable() and CONTROL_CHARACTERS.search(value):
        raise ValueError(f"the {name} header has a control character{how}")


def one_address(value: str) -> Address | None:
    """`value` as one address (with a name or not), its domain in IDNA form (xn--) when it is not ASCII;
    None when it is not one address. aiosmtplib sends to every address the To: header parses to, so a
    comma would add a recipient, and an empty entry or a group names none; a non-ASCII address needs a
    server offering SMTPUTF8, which a domain's DNS form does not. The parser's defects are not judged
    (a non-ASCII local part, 'a.@b.com': the server decides, as before); the To: header is written from
    what it parsed, so the message goes to exactly the addresses checked here."""
    scratch = EmailMessage()
    try:
        scratch["To"] = value
    except (ValueError, IndexError):  # IndexError: CPython's parser on 'a@' (3.11)
        return None
    found: tuple[Address, ...] = scratch["To"].addresses
    if len(found) != 1 or not found[0].username or not found[0].domain:
        return None
    address = found[0]
    if address.domain.isascii():
        return address
    try:
        domain = idna.encode(address.domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return address  # no DNS form: sent as it is (a server offering SMTPUTF8 may take it)
    return Address(address.display_name, address.username, domain)


class EmailExecutor:
    def __init__(self, registry: Registry, pools: Mapping[str, SmtpPool], default_destination: str | None) -> None:
        self._registry = registry
        self._pools = pools
        self._default = default_destination

    def destination(self, action: EmailRequested) -> SmtpDestination:
        name = action.destination or self._default
        if name is None:
            smtp = self._registry.smtp()
            if len(smtp) != 1:
                raise PermanentError("email action names no destination and there is no single smtp destination")
            return self._registry.get(smtp[0].name, SmtpDestination)
        return self._registry.get(name, SmtpDestination)

    async def __call__(self, action: EmailRequested) -> Delivery:
        dest = self.destination(action)
        try:
            message = build_message(action, dest.from_address, auto_submitted=dest.auto_submitted)
        except ValueError as exc:
            raise failure(PermanentError(f"invalid email: {exc}"), dest.name, redact=dest.redact) from None
        timeout = self._registry.timeout(dest)
        sent = Transactions()
        stopped: PostcallError | None = None
        async with self._registry.gate(dest.name).slot() as slot:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    await send_all(self._pools[dest.name], message, sent)
            except Exception as exc:  # aiosmtplib errors, OSError, our own timeout
                stopped = classify_smtp(exc, timeout)
                slot.record(not isinstance(stopped, RetryableError))
                if not sent.accepted:  # nobody has the message: the attempt failed, a retry sends it to everyone
                    raise failure(stopped, dest.name, redact=dest.redact) from None
            finally:
                elapsed = time.perf_counter() - started
                delivery_duration(action.type, dest.name).observe(elapsed)
            if stopped is None:
                slot.record(True)  # the server answered; a recipient's deferral is not the destination failing
        note = sent.note(stopped)
        return Delivery("delivered", dest.name, 250, round(elapsed * 1000, 3), note and dest.redact(note))


class Transactions:
    """What the transactions of one attempt came to: whether the server took the message for anyone (then
    it is never sent again: they have it), and the recipients it did not take, each with its last answer."""

    def __init__(self) -> None:
        self.accepted = False
        self.refused: dict[str, SMTPResponse] = {}

    def pending(self) -> list[str]:
        """The recipients to try again in another transaction."""
        return [rcpt for rcpt, answer in self.refused.items() if _for_now(answer)]

    def note(self, stopped: PostcallError | None) -> str | None:
        """The delivered result's note: who did not get the message, and why. `stopped`: the error a later
        transaction ended in, which is the answer of the recipients it was for."""
        rest = {rcpt: answer for rcpt, answer in self.refused.items() if _for_now(answer)}
        final = {rcpt: answer for rcpt, answer in self.refused.items() if not _for_now(answer)}
        parts = []
        if rest:
            why = f"{', '.join(rest)} ({stopped})" if stopped else _listed(rest)  # the error once, not per recipient
            parts.append(f"not delivered to {why}; not retried: the others have the message")
        if final:
            parts.append(f"refused: {_listed(final)}")
        return "; ".join(parts) or None


def _for_now(answer: SMTPResponse) -> bool:
    return 400 <= answer.code < 500 or answer.code == 552


async def send_all(pool: SmtpPool, message: EmailMessage, sent: Transactions) -> None:
    """The message to every recipient, in as many transactions as the server takes them in; `sent` says
    how far it got, also when a transaction raises (a later one's error is then theirs alone)."""
    sent.refused = await pool.send(message)
    sent.accepted = True
    while again := sent.pending():
        try:
            answers = await pool.send(message, again)  # took one at least: each round has fewer
        except SMTPRecipientsRefused as exc:  # took none of them: that is their answer
            sent.refused |= {r.recipient: SMTPResponse(r.code, r.message) for r in exc.recipients}
            return
        sent.refused = {rcpt: answer for rcpt, answer in sent.refused.items() if rcpt not in again} | answers


def _listed(refused: Mapping[str, SMTPResponse]) -> str:
    return ", ".join(f"{rcpt} ({answer.code} {answer.message})" for rcpt, answer in refused.items())
