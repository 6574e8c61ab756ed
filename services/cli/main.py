"""The `postcall` command: one entry point for operators and for running the services."""

from __future__ import annotations

import asyncio
import importlib

import typer

from services.cli import dlq, topics

app = typer.Typer(help="Post-call automation on Kafka.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")

SERVICES = ("extractor", "router", "dispatcher")

# Commands that live beside the service they belong to.
for _name, _module in (("config", "services.cli.config"), ("reextract", "services.cli.reextract")):
    try:
        _sub = importlib.import_module(_module)
    except ImportError:  # pragma: no cover - only while a service is being built
        continue
    app.add_typer(_sub.app, name=_name)

try:
    from services.cli import explain as _explain

    app.command("explain")(_explain.explain)
except ImportError:  # pragma: no cover
    pass


@app.command("run")
def run(service: str = typer.Argument(help="extractor, router or dispatcher")) -> None:
    """Run one service in the foreground (settings from POSTCALL_* environment variables)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    asyncio.run(importlib.import_module(f"services.{service}.__main__").main())


if __name__ == "__main__":
    app()
