"""API bearer tokens and the audit table.

A token is 32 random bytes (`pc_` + url-safe base64), shown once when created and stored only as its
SHA-256: a token has full entropy, so a fast hash is enough (a slow password hash protects guessable
secrets; nobody guesses 256 random bits), and verification stays one indexed lookup per request.
Roles: `viewer` reads; `operator` reads and acts (replay, re-extract), and every action is audited.
A token is usable until it is revoked or its expiry (if it was given one) passes; an expired token is
refused as a revoked one is, and its name may be given to a new token.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.store.models import ApiToken, AuditEntry, table
from services.store.views import AuditView, Page, TokenView

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
PREFIX = "pc_"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per token


class TokenError(ValueError):
    """Raised when a token cannot be created or revoked as asked (duplicate name, unknown role or name)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role, or `local` on an unauthenticated loopback API."""

    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def usable(now: datetime) -> ColumnElement[bool]:
    """The tokens a request may use now: not revoked, not expired (the API's and the console's check)."""
    t = table(ApiToken).c
    return and_(t.revoked_at.is_(None), or_(t.expires_at.is_(None), t.expires_at > now))


async def create_token(conn: AsyncConnection, name: str, role: str, expires_in: timedelta | None = None) -> str:
    """A new token for `name`, valid for `expires_in` (None: until revoked); the plain token is returned
    once and never stored. An expired token of that name is marked revoked at its expiry (its name is free)."""
    if role not in ROLES:
        raise TokenError(f"unknown role {role!r}: choose viewer or operator")
    if not name.strip():
        raise TokenError("a token needs a name (who or what uses it)")
    if not name.isprintable():  # the name is printed by `token list`, in audit entries and on the console
        raise TokenError("a token's name must be printable text: no control character, tab or line break")
    if expires_in is not None and expires_in <= timedelta(0):
        raise TokenError("a token's lifetime must be more than 0")
    token = PREFIX + secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    t = table(ApiToken).c
    try:
        async with conn.begin_nested():
            await conn.execute(
                update(ApiToken)
                .where(t.name == name, t.revoked_at.is_(None), t.expires_at <= now)
                .values(revoked_at=t.expires_at)
            )
            await conn.execute(
                insert(ApiToken).values(
                    name=name,
                    role=role,
                    token_sha256=digest(token),
                    created_at=now,
                    expires_at=None if expires_in is None else now + expires_in,
                )
            )
    except IntegrityError:
        raise TokenError(f"a token named {name!r} exists already: revoke it first or choose another name") from None
    return token


async def revoke_token(conn: AsyncConnection, name: str) -> None:
    t = table(ApiToken).c
    result = await conn.execute(
        update(ApiToken).where(t.name == name, t.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
    )
    if result.rowcount == 0:
        raise TokenError(f"no active token named {name!r}")


async def list_tokens(conn: AsyncConnection) -> list[TokenView]:
    t = table(ApiToken).c
    rows = await conn.execute(
        select(t.name, t.role, t.created_at, t.last_used_at, t.revoked_at, t.expires_at).order_by(t.name, t.id)
    )
    return [TokenView(**r._mapping) for r in rows]


async def active_tokens(conn: AsyncConnection) -> int:
    t = table(ApiToken).c
    return int((await conn.execute(select(func.count()).where(t.revoked_at.is_(None)))).scalar_one())


async def verify(conn: AsyncConnection, token: str) -> Principal | None:
    """The principal of an active token, else None. The lookup is by hash (a unique index), so the
    comparison never touches the plain token; secrets.compare_digest guards the last step anyway."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    wanted = digest(token)
    t = table(ApiToken).c
    now = datetime.now(UTC)
    row = (
        await conn.execute(
            select(t.id, t.name, t.role, t.token_sha256, t.last_used_at).where(t.token_sha256 == wanted, usable(now))
        )
    ).first()
    if row is None or not secrets.compare_digest(row.token_sha256, wanted):
        return None
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        await conn.execute(update(ApiToken).where(t.id == row.id).values(last_used_at=now))
    return Principal(row.name, row.role)


# ── audit ──────────────────────────────────────────────────────────────────────────────────────────


async def audit(
    conn: AsyncConnection,
    who: Principal,
    action: str,
    target: Mapping[str, Any],
    outcome: Mapping[str, Any],
    *,
    dry_run: bool = False,
) -> int:
    """One audit row; returns its id (`complete_audit` writes the outcome of an action audited before it ran)."""
    done = await conn.execute(
        insert(table(AuditEntry))
        .returning(table(AuditEntry).c.id)
        .values(
            at=datetime.now(UTC),
            actor=who.name,
            role=who.role,
            action=action,
            target=orjson.dumps(target, default=str).decode(),
            outcome=orjson.dumps(outcome, default=str).decode(),
            dry_run=dry_run,
        )
    )
    return int(done.scalar_one())


async def complete_audit(conn: AsyncConnection, entry: int, outcome: Mapping[str, Any]) -> None:
    await conn.execute(
        update(AuditEntry)
        .where(table(AuditEntry).c.id == entry)
        .values(outcome=orjson.dumps(outcome, default=str).decode())
    )


async def list_audit(conn: AsyncConnection, limit: int = 50, before_id: int | None = None) -> Page[AuditView]:
    a = table(AuditEntry).c
    query = select(*a).order_by(a.id.desc()).limit(limit + 1)
    if before_id is not None:
        query = query.where(a.id < before_id)
    rows = (await conn.execute(query)).all()
    items = [
        AuditView(
            id=r.id,
            at=r.at,
            actor=r.actor,
            role=r.role,
            action=r.action,
            target=orjson.loads(r.target),
            outcome=orjson.loads(r.outcome),
            dry_run=r.dry_run,
        )
        for r in rows[:limit]
    ]
    return Page(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)
