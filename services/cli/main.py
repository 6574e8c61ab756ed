"""The `postcall` command: one entry point for operators and for running the services."""

from __future__ import annotations

import asyncio
import importlib

import typer

from services.cli import config, dlq, explain, publish, reextract, store, topics, trial

app = typer.Typer(help="Post-call automation on Kafka.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")

app.add_typer(store.app, name="store")
app.add_typer(store.api, name="api")

SERVICES = ("extractor", "router", "dispatcher", "api", "ingress")

app.add_typer(config.app, name="config")
app.command("explain")(explain.explain)
app.command("reextract")(reextract.reextract)
app.command("try")(trial.try_)
app.command("publish")(publish.publish)


@app.command("run")
def run(service: str = typer.Argument(help="extractor, router, dispatcher, api or ingress")) -> None:
    """Run one service in the foreground (settings from POSTCALL_* environment variables)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    code = asyncio.run(importlib.import_module(f"services.{service}.__main__").main())
    if isinstance(code, int) and code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
