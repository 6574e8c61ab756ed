"""`postcall topics create | list`: the topic registry (schemas/routes.py) made real, idempotently."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from schemas.routes import registry
from services.cli.options import Bootstrap, kafka_settings
from services.common.kafka import TopicsRefused, ensure_topics, topic_differences

app = typer.Typer(help="Create and list the topics declared in schemas/topics.py.", no_args_is_help=True)


@app.command("create")
def create(
    bootstrap: Bootstrap = None,
    replication: int | None = typer.Option(None, help="Replication factor (default: registry, capped at brokers)."),
) -> None:
    """Create every registry topic that does not exist yet; says what it created, what the cluster refused
    and which existing topics have fewer partitions, a shorter retention or other settings than declared
    (either: exit 1)."""
    kafka = kafka_settings(bootstrap)
    topics = registry()
    try:
        created, existing = asyncio.run(ensure_topics(kafka, topics, replication))
    except TopicsRefused as exc:
        for name in exc.created:
            typer.echo(f"created  {name}")
        for name, why in exc.refused.items():
            typer.echo(f"refused  {name}: {why}", err=True)
        typer.echo(f"{len(exc.created)} created, {len(exc.refused)} refused by the cluster", err=True)
        raise typer.Exit(1) from None
    for name in created:
        typer.echo(f"created  {name}")
    # an existing topic is never changed: one created otherwise may lose or refuse records, so say so
    differing = asyncio.run(topic_differences(kafka, [t for t in topics if t.name in existing]))
    for name, lacking in differing.items():
        typer.echo(f"differs  {name}: {'; '.join(lacking)}")
    typer.echo(f"{len(created)} created, {len(existing)} already existed")
    if differing:
        typer.echo(
            f"{len(differing)} existing topic(s) differ from the registry and were not changed: see "
            'docs/operations.md, "Topics that differ from the registry"',
            err=True,
        )
        raise typer.Exit(1)


@app.command("list")
def list_topics() -> None:
    """Print the registry: name, partitions, retention, cleanup policy, producers and consumers."""
    topics = registry()
    table = Table()  # the names whole (they are copied into commands); the rest folds in a narrow terminal
    table.add_column("topic", no_wrap=True, min_width=max(len(t.name) for t in topics))
    for column in ("partitions", "retention (h)", "cleanup", "produced by", "consumed by"):
        table.add_column(column, overflow="fold")
    for t in topics:
        table.add_row(
            t.name,
            str(t.partitions),
            f"{t.retention_ms / 3_600_000:g}",
            t.cleanup_policy,
            ", ".join(t.producers),
            ", ".join(t.consumers),
        )
    Console().print(table)
