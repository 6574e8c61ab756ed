"""`postcall store migrate | prune` and `postcall api token create | list | revoke`: the store's upkeep.

The store is POSTCALL_DATABASE__URL (or --database-url): sqlite+aiosqlite:///postcall.db by default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.cli.plain import escape_controls
from services.store import prune as pruning
from services.store import tokens
from services.store.db import Store, StoreError, current_revision, make_engine, safe_url
from services.store.settings import MAX_RETENTION_DAYS, DatabaseSettings
from services.store.views import TokenView

app = typer.Typer(help="The conversation store: migrate the schema, prune old rows.", no_args_is_help=True)
api = typer.Typer(help="The query API: bearer tokens (roles viewer, operator).", no_args_is_help=True)
token_app = typer.Typer(help="Create, list and revoke API tokens (stored hashed).", no_args_is_help=True)
api.add_typer(token_app, name="token")

DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="The store (default: POSTCALL_DATABASE__URL, else sqlite:///postcall.db)."),
]
T = TypeVar("T")


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTCALL_", env_nested_delimiter="__", extra="ignore")
    database: DatabaseSettings = DatabaseSettings()


def database_settings(url: str | None) -> DatabaseSettings:
    found = _Env().database
    return found.model_copy(update={"url": DatabaseSettings.model_validate({"url": url}).url}) if url else found


def with_store(url: str | None, work: Callable[[Store], Awaitable[T]], *, upgrade: bool = False) -> T:
    """`work` on the store at `url` (default: POSTCALL_DATABASE__URL, else ./postcall.db); a store that
    cannot be opened or a token refused is one line on stderr and exit code 2. Only `store migrate`
    upgrades a store's schema (`upgrade`); the others create it where there is none yet and refuse one at
    an older revision (Store.open)."""

    async def go() -> T:
        async with Store.open(database_settings(url), upgrade=upgrade) as store:
            return await work(store)

    try:
        return asyncio.run(go())
    except (StoreError, tokens.TokenError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("migrate")
def migrate(database_url: DatabaseUrl = None) -> None:
    """Bring the schema to this version's newest revision (the services also do it at start)."""
    before = asyncio.run(_revision_or_none(database_settings(database_url)))

    async def after(store: Store) -> tuple[str, str | None]:
        return safe_url(store.engine.url), await current_revision(store.engine)

    url, now = with_store(database_url, after, upgrade=True)
    if before == now:
        typer.echo(f"store at {url} is up to date (schema revision {now})")
    else:  # the operator migrating by hand before a rollout sees that it ran, and from where
        typer.echo(f"store at {url} migrated from schema revision {before or 'none'} to {now}")


async def _revision_or_none(settings: DatabaseSettings) -> str | None:
    """The schema revision before migrating; None when there is none or the store cannot be read (opening it
    next says why)."""
    try:
        engine = make_engine(settings)
    except Exception:
        return None
    try:
        return await current_revision(engine)
    except Exception:
        return None
    finally:
        await engine.dispose()


@app.command("prune")
def prune(
    database_url: DatabaseUrl = None,
    days: Annotated[float | None, typer.Option(help="Keep this many days (default: the store's retention).")] = None,
) -> None:
    """Delete rows older than the retention (the recorder also does it periodically)."""
    if days is not None and not 0 < days <= MAX_RETENTION_DAYS:  # as the retention setting
        raise typer.BadParameter(
            f"{days:g} is not a number of days to keep (more than 0, as 0 or fewer would delete every row; "
            f"at most {MAX_RETENTION_DAYS})",
            param_hint="--days",
        )
    settings = database_settings(database_url)
    keep = days if days is not None else settings.retention_days
    deleted = with_store(database_url, lambda store: pruning.prune(store, keep, settings.prune_batch))
    typer.echo(", ".join(f"{n} {name}" for name, n in deleted.items()) + f" deleted (older than {keep:g} days)")


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the token (unique).")],
    role: Annotated[str, typer.Option(help="viewer (reads) or operator (reads, replays, re-extracts).")] = "viewer",
    expires_days: Annotated[
        float | None, typer.Option(help="Refused this many days after it is created (default: valid until revoked).")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a token and print it once; only its SHA-256 is stored."""
    lifetime = None if expires_days is None else _lifetime(expires_days)

    async def work(store: Store) -> tuple[str, str]:
        async with store.write() as conn:
            token = await tokens.create_token(conn, name, role, lifetime)
        return token, safe_url(store.engine.url)

    token, where = with_store(database_url, work)
    typer.echo(token)
    # the default store is ./postcall.db: say which one, so a token meant for a running API is seen to be in its store
    typer.echo(f"token {name!r} ({role}) stored in {where}", err=True)


def _lifetime(days: float) -> timedelta:
    try:
        now = datetime.now(UTC)
        lifetime = (now + timedelta(days=days)) - now  # an expiry this side of year 9999
    except (OverflowError, ValueError):
        lifetime = timedelta(0)
    if lifetime <= timedelta(0):
        raise typer.BadParameter(
            f"{days:g} is not a number of days a token lives (more than 0)", param_hint="--expires-days"
        )
    return lifetime


@token_app.command("list")
def list_tokens(database_url: DatabaseUrl = None) -> None:
    """Names, roles, state (active and until when, revoked, expired), when created, last used (never the tokens)."""

    async def work(store: Store) -> list[TokenView]:
        async with store.read() as conn:
            return await tokens.list_tokens(conn)

    now = datetime.now(UTC)
    for t in with_store(database_url, work):
        if t.revoked_at:
            state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
        elif t.expires_at and t.expires_at <= now:
            state = f"expired {t.expires_at:%Y-%m-%d %H:%M}"
        else:
            state = f"active until {t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "active"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        name = escape_controls(t.name)  # one stored before names were refused a control character
        typer.echo(f"{name}\t{t.role}\t{state}\tcreated {t.created_at:%Y-%m-%d %H:%M}\tlast used {used}")


@token_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The token's name.")], database_url: DatabaseUrl = None) -> None:
    """Revoke a token: requests with it are refused from now on."""

    async def work(store: Store) -> None:
        async with store.write() as conn:
            await tokens.revoke_token(conn, name)

    with_store(database_url, work)
    typer.echo(f"revoked {name}")
