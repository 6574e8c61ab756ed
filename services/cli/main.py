"""The `postcall` command: one entry point for operators and for running the services."""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsError

from schemas.routes import SERVICES
from services.cli import (
    config,
    destinations,
    dlq,
    evaluate,
    explain,
    held,
    options,
    publish,
    reextract,
    store,
    topics,
    trial,
)
from services.cli.republish import RepublishFailed
from services.common.settings import misnamed, setting_variables, settings_problems, unparsed_variables

app = typer.Typer(help="Post-call automation on Kafka.", no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(topics.app, name="topics")
app.add_typer(dlq.app, name="dlq")
app.add_typer(held.app, name="held")
app.add_typer(destinations.app, name="destinations")

app.add_typer(store.app, name="store")
app.add_typer(store.api, name="api")

RUNNABLE = (*SERVICES, "api", "ingress")  # the Kafka services of schemas.routes, the query API and the ingress

app.add_typer(config.app, name="config")
app.command("explain")(explain.explain)
app.command("reextract")(reextract.reextract)
app.command("try")(trial.try_)
app.command("publish")(publish.publish)
app.command("eval")(evaluate.evaluate)


@app.command("run")
def run(service: str = typer.Argument(help="extractor, router, dispatcher, recorder, api or ingress")) -> None:
    """Run one service in the foreground (settings from POSTCALL_* environment variables)."""
    if service not in RUNNABLE:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(RUNNABLE)}")
    code: int = importlib.import_module(f"services.{service}.__main__").start(f"postcall run {service}")
    if code:
        raise typer.Exit(code)


# what the commands read from the environment besides the services' settings
READ_DIRECTLY = ("POSTCALL_API_URL", "POSTCALL_API_TOKEN", "POSTCALL_TOPIC_PARTITIONS", "POSTCALL_TOPIC_REPLICATION")


def misnamed_anywhere() -> list[str]:
    """Variables with their underscores wrong for any service's setting or what the commands read
    (POSTCALL_KAFKA_BOOTSTRAP_SERVERS): ignored, so a command would go to the default brokers or store."""
    from services.api.settings import ApiSettings
    from services.dispatcher.settings import DispatcherSettings
    from services.extractor.settings import ExtractorSettings
    from services.ingress.settings import IngressSettings
    from services.recorder.settings import RecorderSettings
    from services.router.settings import RouterSettings

    classes = (ApiSettings, DispatcherSettings, ExtractorSettings, IngressSettings, RecorderSettings, RouterSettings)
    return misnamed([*READ_DIRECTLY, *(name for model in classes for name in setting_variables(model))])


def main() -> None:
    """The `postcall` entry point: Kafka out of reach is one line naming how to point at it."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection warnings repeat ours
    if sys.argv[1:2] != ["run"]:  # a service names them itself (services.common.settings.run_service)
        for line in misnamed_anywhere():
            print(f"postcall: {line}", file=sys.stderr)
    try:
        app()
    except (KafkaError, RepublishFailed) as exc:
        print(f"postcall: {options.kafka_unreachable(exc)}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as exc:
        if exc.title not in _settings_classes():
            raise  # not the environment: a defect, with its traceback
        for line in settings_problems(exc):  # as `postcall run` names them
            print(f"postcall: {line}", file=sys.stderr)
        sys.exit(2)
    except SettingsError as exc:
        for line in unparsed_variables(exc):
            print(f"postcall: {line}", file=sys.stderr)
        sys.exit(2)


def _settings_classes() -> set[str]:
    """The names of every settings class loaded (the title of a ValidationError one raises)."""
    names, todo = set(), [BaseSettings]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return names


if __name__ == "__main__":
    main()
