"""Console sessions, kept in the store: opened by logging in with an API token, ended by logout, by time
(an absolute and an idle limit), or by revoking the token.

The session id (32 random bytes) lives only in the browser's cookie; the store keeps its SHA-256, so a
copy of the database opens no session. Each session has its own CSRF token. Checking a session is one
primary-key lookup joined to its token; `last_seen_at` is written at most once a minute per session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.console.settings import ConsoleSettings
from services.store.models import ApiToken, ConsoleSession, table
from services.store.tokens import Principal, Role, usable

SEEN_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf_token: str
    touch: bool = False  # the idle clock should be reset in the store


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


async def open_session(conn: AsyncConnection, token: str, settings: ConsoleSettings) -> tuple[str, Session] | None:
    """A new session for an active API token (the plain session id is returned once); None for a token
    that is unknown, revoked or expired. Expired sessions are deleted on the way."""
    t = table(ApiToken).c
    wanted = hashlib.sha256(token.encode()).hexdigest()
    now = datetime.now(UTC)
    row = (await conn.execute(select(t.id, t.name, t.role).where(t.token_sha256 == wanted, usable(now)))).first()
    if row is None or not token.startswith("pc_"):
        return None
    await conn.execute(delete(ConsoleSession).where(table(ConsoleSession).c.expires_at < now))
    session_id, csrf = new_secret(), new_secret()
    await conn.execute(
        insert(ConsoleSession).values(
            id_sha256=_digest(session_id),
            token_id=row.id,
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=settings.session_max_hours),
        )
    )
    return session_id, Session(Principal(row.name, _role(row.role)), csrf)


async def find_session(conn: AsyncConnection, session_id: str, settings: ConsoleSettings) -> Session | None:
    """The live session of this id, else None (unknown, expired, idle too long, or its token revoked or expired).
    A read; `Session.touch` says whether `touch_session` should record this use (at most once a minute)."""
    if not session_id or len(session_id) > 100:
        return None
    s, t = table(ConsoleSession).c, table(ApiToken).c
    now = datetime.now(UTC)
    row = (
        await conn.execute(
            select(s.csrf_token, s.last_seen_at, s.expires_at, t.name, t.role)
            .join_from(table(ConsoleSession), table(ApiToken), s.token_id == t.id)
            .where(s.id_sha256 == _digest(session_id), usable(now))
        )
    ).first()
    idle = timedelta(minutes=settings.session_idle_minutes)
    if row is None or row.expires_at <= now or row.last_seen_at + idle <= now:
        return None
    return Session(Principal(row.name, _role(row.role)), row.csrf_token, touch=now - row.last_seen_at > SEEN_RESOLUTION)


async def touch_session(conn: AsyncConnection, session_id: str) -> None:
    s = table(ConsoleSession).c
    await conn.execute(
        update(ConsoleSession).where(s.id_sha256 == _digest(session_id)).values(last_seen_at=datetime.now(UTC))
    )


async def close_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute(delete(ConsoleSession).where(table(ConsoleSession).c.id_sha256 == _digest(session_id)))


def _role(value: str) -> Role:
    return "operator" if value == "operator" else "viewer"
