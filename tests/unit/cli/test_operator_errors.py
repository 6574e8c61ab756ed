"""The command line as an operator meets it: a clear one-line error, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import orjson
import pytest
import typer
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from services.cli.apiclient import ApiClient
from services.cli.config import app as config_app
from services.devkit.kafka import free_port
from services.store import writer
from services.store.db import Store
from services.store.models import ApiToken, Conversation
from services.store.settings import DatabaseSettings
from tests.support.calls import rows_of, story
from tests.support.http import serving
from tests.support.procs import ROOT

COMMANDS = [["explain", "c1"], ["dlq", "list"], ["topics", "create"], ["reextract", "--ids", "c1"]]


def postcall(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTCALL_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**clean, **(env or {})},
    )


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_no_broker_is_one_line_naming_how_to_point_at_kafka(command: list[str]) -> None:
    """Used to be a 109-line traceback that never said --bootstrap."""
    nowhere = f"127.0.0.1:{free_port()}"
    done = postcall(*command, env={"POSTCALL_KAFKA__BOOTSTRAP_SERVERS": nowhere})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"postcall: cannot reach Kafka at {nowhere} (no broker answered); start it (make kafka) or point at it "
        "with --bootstrap HOST:PORT or POSTCALL_KAFKA__BOOTSTRAP_SERVERS"
    ]


def test_the_bootstrap_option_is_the_address_named() -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    done = postcall("dlq", "list", "--bootstrap", nowhere)
    assert done.returncode == 2 and f"cannot reach Kafka at {nowhere}" in done.stderr


TRY_CALL = "examples/conversations/0005-callback-request.json"


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (["dlq", "list"], "POSTCALL_KAFKA__SECURITY_PROTOCOL", "TLS"),
        (["try", "-c", TRY_CALL, "-a", "examples/agents"], "POSTCALL_RUNTIME__MAX_IN_FLIGHT", "many"),
        (["store", "migrate"], "POSTCALL_DATABASE__POOL_SIZE", "0"),
    ],
    ids=["kafka", "try", "store"],
)
def test_a_bad_environment_value_is_named_as_postcall_run_names_it(
    command: list[str], variable: str, value: str
) -> None:
    """Used to be a pydantic ValidationError traceback (exit 1); the console's Try a flow showed its last
    line, "For further information visit https://errors.pydantic.dev/..."."""
    done = postcall(*command, env={variable: value})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"postcall: {variable}: ")


def test_run_without_its_environment_names_the_variable() -> None:
    """Used to say "config_dir Field required" without naming POSTCALL_CONFIG_DIR."""
    done = postcall("run", "router")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "postcall run router: POSTCALL_CONFIG_DIR is not set (a required setting; see the service's settings.py)"
    ]


def test_run_ingress_without_its_endpoints_file_names_that_variable() -> None:
    """Used to say "POSTCALL_INGRESS is not set": a group of settings, not a variable anyone can set."""
    done = postcall("run", "ingress")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "postcall run ingress: POSTCALL_INGRESS__ENDPOINTS_FILE is not set (a required setting; see the service's "
        "settings.py)"
    ]


def test_run_with_a_bad_value_names_the_variable_and_the_problem() -> None:
    done = postcall("run", "router", env={"POSTCALL_CONFIG_DIR": "/tmp", "POSTCALL_RELOAD_INTERVAL_SECONDS": "soon"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith("postcall run router: POSTCALL_RELOAD_INTERVAL_SECONDS: ")


# what each service needs from the environment before it starts, as its pod runs it (python -m services.<name>)
REQUIRED = {
    "extractor": "POSTCALL_CONFIG_DIR",
    "router": "POSTCALL_CONFIG_DIR",
    "dispatcher": "POSTCALL_DESTINATIONS_FILE",
    "ingress": "POSTCALL_INGRESS__ENDPOINTS_FILE",
}


@pytest.mark.parametrize("service", sorted(REQUIRED))
def test_a_service_started_as_its_pod_starts_it_names_a_missing_variable(service: str) -> None:
    """`python -m services.<name>` (the Deployments' command) used to end in a pydantic traceback."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTCALL_")}
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=clean
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{service}: {REQUIRED[service]} is not set (a required setting; see the service's settings.py)"
    ]


def test_a_bad_value_for_a_pod_is_named_with_its_problem() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTCALL_")}
    env |= {"POSTCALL_API__PORT": "eighty", "POSTCALL_RUNTIME__MAX_IN_FLIGHT": "many"}
    for service in ("api", "recorder"):
        done = subprocess.run(
            [sys.executable, "-m", f"services.{service}"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[0].startswith(f"{service}: POSTCALL_"), done.stderr


def test_publish_of_an_event_naming_no_account_says_so(tmp_path: Path) -> None:
    """Used to be a traceback ending in pydantic's "Account id: String should have at least 1 character"."""
    event = orjson.loads((ROOT / "examples" / "conversations" / "0007-appointment-booked.json").read_bytes())
    del event["account"]
    path = tmp_path / "call.json"
    path.write_bytes(orjson.dumps(event))
    done = postcall("publish", str(path), "--bootstrap", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"{path}: the payload cannot be used:",
        "  account: Field required (a ConversationEnded names its account; or pass --account)",
    ]


def test_publish_without_a_broker_is_one_line_naming_where_it_looked() -> None:
    """Used to be the publisher's bare "kafka not reachable" once per connection attempt, then "not
    published: Kafka is not reachable", naming neither the address nor --bootstrap."""
    nowhere = f"127.0.0.1:{free_port()}"
    call = str(ROOT / "examples" / "conversations" / "0001-support-resolved-hangup.json")
    done = postcall("publish", call, "--bootstrap", nowhere, "--timeout", "2")
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"not published: cannot reach Kafka at {nowhere} (") and "--bootstrap HOST:PORT" in line


@pytest.mark.parametrize("command", ["publish", "try"])
@pytest.mark.parametrize("option", ["--account", "--agent"])
def test_an_account_or_agent_id_over_the_contracts_256_characters_is_a_usage_error(command: str, option: str) -> None:
    """`--account` was a pydantic traceback out of the mapping; `publish --agent` put an event the contract
    refuses on the topic (the extractor dead-letters it), `try --agent` tried it."""
    vapi = str(ROOT / "examples" / "webhooks" / "vapi" / "phone-inbound-with-analysis.json")
    where = ["--from", "vapi", vapi, "-b", f"127.0.0.1:{free_port()}", "--timeout", "1"]
    args = where if command == "publish" else ["-c", vapi, "-a", str(ROOT / "examples" / "agents")]
    others = ["--account", "acme"] if option == "--agent" else []
    done = postcall(command, *args, *others, option, "a" * 300)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "an id is 1 to 256 characters, not 300" in done.stderr


@pytest.mark.parametrize(
    "content",
    [None, b"", b"{not json", b"[]", b'{"cases": 3}'],
    ids=["missing", "empty", "not-json", "a-list", "not-an-eval-result"],
)
def test_eval_with_an_unreadable_compare_file_names_it_before_running(tmp_path: Path, content: bytes | None) -> None:
    """Used to be a traceback (FileNotFoundError, JSONDecodeError; JSON not of `eval --json`: AttributeError or
    KeyError after the whole run)."""
    before = tmp_path / "before.json"
    if content is not None:
        before.write_bytes(content)
    done = postcall("eval", "--limit", "1", "--compare", str(before))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"postcall eval: cannot read --compare {before}: ")
    assert "provider:" not in done.stdout  # refused before any extraction ran


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_eval_with_a_json_path_it_cannot_write_names_it_before_running(tmp_path: Path, where: str) -> None:
    """Used to be a FileNotFoundError / IsADirectoryError traceback after the whole run (an hour on a real
    model), its results lost."""
    out = tmp_path / "nowhere" / "after.json" if where == "missing-folder" else tmp_path
    done = postcall("eval", "--limit", "1", "--json", str(out))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"postcall eval: cannot write --json {out}: ")
    assert "provider:" not in done.stdout  # refused before any extraction ran


@pytest.mark.parametrize("days", ["0", "-1", "1e9"])
def test_store_prune_refuses_a_retention_that_keeps_nothing(tmp_path: Path, days: str) -> None:
    """`--days 0` or `--days -30` (a typo for "30 days back") deleted every row of the store: the store's
    own retention setting refuses <= 0, the option did not; a number of days past year 1 was an
    OverflowError traceback."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"

    async def conversations(seed: bool) -> int:
        async with Store.open(DatabaseSettings.model_validate({"url": url})) as store:
            if seed:
                await writer.write(store, rows_of(story("today", at=datetime.now(UTC))))
            async with store.read() as conn:
                return int((await conn.execute(select(func.count()).select_from(Conversation))).scalar_one())

    assert asyncio.run(conversations(seed=True)) == 1
    done = postcall("store", "prune", "--days", days, "--database-url", url)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--days" in done.stderr and "deleted" not in done.stdout
    assert asyncio.run(conversations(seed=False)) == 1


def test_store_prune_with_a_retention_setting_past_the_calendar_names_the_setting(tmp_path: Path) -> None:
    """Without --days the store's own retention is used: a million days was an OverflowError traceback."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    done = postcall("store", "prune", "--database-url", url, env={"POSTCALL_DATABASE__RETENTION_DAYS": "1000000"})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("postcall: POSTCALL_DATABASE__RETENTION_DAYS: "), line


@pytest.mark.parametrize(
    "command", [["store", "migrate"], ["api", "token", "list"], ["run", "api"]], ids=["migrate", "token", "run-api"]
)
def test_a_database_url_that_is_not_a_url_is_one_line(command: list[str]) -> None:
    """Used to be sqlalchemy's ArgumentError traceback ("Could not parse SQLAlchemy URL"), exit 1."""
    done = postcall(*command, env={"POSTCALL_DATABASE__URL": "postcal.db"})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.endswith(": the database URL is not a URL (sqlite:///path.db or postgresql://user:password@host/db)")


@pytest.mark.parametrize(
    "command", [["store", "migrate"], ["api", "token", "list"], ["run", "api"]], ids=["migrate", "token", "run-api"]
)
def test_a_sqlite_store_in_a_folder_that_cannot_be_made_is_one_line(command: list[str], tmp_path: Path) -> None:
    """The migration's lock file beside the database was opened before the errors that name the store were
    caught: a folder that is a file, or cannot be written (a read-only volume), gave a FileExistsError or
    PermissionError traceback (exit 1) from every service's start and every store command."""
    (tmp_path / "data").write_text("")
    done = postcall(*command, env={"POSTCALL_DATABASE__URL": f"sqlite:///{tmp_path / 'data' / 'postcall.db'}"})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    # `store migrate` and a service migrate; `api token` reads the revision first (only migrate upgrades)
    assert re.search(r": cannot (migrate|reach) the store at sqlite\+aiosqlite:///", line), line


def test_a_password_in_the_database_urls_query_is_never_shown() -> None:
    """asyncpg (and libpq) take the password as `?password=` too; the messages naming the store hid only
    the URL's own password (render_as_string(hide_password=True)), so a store that did not answer printed
    `cannot migrate the store at postgresql+asyncpg://ops:***@127.0.0.1:N/calls?password=<the password>`."""
    url = f"postgresql://ops:own-canary@127.0.0.1:{free_port()}/calls?password=query-canary&ssl=disable"
    done = postcall("store", "migrate", env={"POSTCALL_DATABASE__URL": url})
    assert done.returncode == 2, done.stderr
    assert "the store at postgresql+asyncpg://ops:***@" in done.stderr and "ssl=disable" in done.stderr, done.stderr
    assert "canary" not in done.stderr + done.stdout, done.stderr


@pytest.mark.parametrize(
    "command", [["store", "migrate"], ["api", "token", "list"], ["run", "api"]], ids=["migrate", "token", "run-api"]
)
def test_a_database_url_parameter_the_driver_does_not_take_is_one_line_naming_it(command: list[str]) -> None:
    """Used to be asyncpg's TypeError traceback ("connect() got an unexpected keyword argument"), exit 1."""
    url = f"postgresql://ops@127.0.0.1:{free_port()}/calls?sslpassword=canary-1&ssl=disable"
    done = postcall(*command, env={"POSTCALL_DATABASE__URL": url})
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert ": the database URL has a query parameter the driver does not take: sslpassword" in line, line
    assert "canary" not in done.stderr + done.stdout


@pytest.mark.parametrize("coordinates", ["nothing", "t:x:0", "t:0:-1", ":0:0", "t:0:"])
def test_dlq_show_of_coordinates_that_are_not_topic_partition_offset_says_so(coordinates: str) -> None:
    """Used to be a traceback (ValueError from the unpacking, from int(), or aiokafka's seek to -1),
    exit 1; refused before Kafka is asked."""
    done = postcall("dlq", "show", coordinates, "--bootstrap", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"postcall dlq show: {coordinates!r} is not topic:partition:offset (as `dlq list` prints it)"
    ]


@pytest.mark.parametrize("option", [["--limit", "0"], ["--limit", "-1"], ["--rate", "-1"]])
def test_dlq_replay_refuses_a_limit_below_one_and_a_negative_rate(option: list[str]) -> None:
    """`--limit 0` replayed every dead letter (`limit or None`), `--limit -1` all but the last one, and a
    negative rate meant no limit; refused before Kafka is asked."""
    done = postcall("dlq", "replay", *option, "--bootstrap", f"127.0.0.1:{free_port()}")
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '{option[0]}'" in done.stderr and "cannot reach Kafka" not in done.stderr


@contextlib.contextmanager
def answering(status: int, body: bytes, content_type: str = "application/json") -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that gives every request the same answer: its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url


STORE_DOWN = (503, b'{"detail":"the store is unavailable; try again shortly"}', "application/json")
NOT_THE_API = (200, b"<html><body>a login page</body></html>", "text/html")


@pytest.mark.parametrize("command", [["explain", "c1"], ["reextract", "--ids", "c1"]], ids=["explain", "reextract"])
@pytest.mark.parametrize("answer", [STORE_DOWN, NOT_THE_API], ids=["store-unavailable", "not-json"])
def test_an_api_answer_that_is_not_the_data_is_one_line_naming_it(
    command: list[str], answer: tuple[int, bytes, str]
) -> None:
    """The API's own 503 "the store is unavailable" was read as the data (a pydantic traceback in
    explain, KeyError: 'items' in reextract), and an answer that is not JSON (--api naming another
    server) a JSONDecodeError traceback; both exit 1."""
    with answering(*answer) as base:
        done = postcall(*command, "--api", base)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    expected = "the store is unavailable; try again shortly" if answer is STORE_DOWN else f"not JSON; is {base}"
    assert f"HTTP {answer[0]}: {expected}" in done.stderr


def _dead_letter(reason: str, replayed_at: str | None = None) -> dict[str, object]:
    return {
        "id": 1, "coordinates": "postcall.extractor.dlq.v1:0:0", "service": "extractor",
        "original_topic": "postcall.conversation-ended.v1", "original_partition": 0, "original_offset": 7,
        "key": "c1", "conversation_id": "c1", "category": "permanent",
        "exception_class": "services.extractor.handler.UnknownAgent", "reason": reason, "attempts": 1,
        "first_failure_at": None, "last_failure_at": None, "dead_lettered_at": "2026-12-07T02:08:19Z",
        "replayed_at": replayed_at, "replayed_by": None,
    }  # fmt: skip


def test_explain_of_a_call_the_store_holds_only_as_a_dead_letter_names_the_dead_letter_and_its_replay() -> None:
    """An unknown agent's call is dead-lettered by the extractor and never decided: explain said only 'no
    decision trace for 'c1' in the store', though the store's answer named the dead letter and why."""
    letters = [_dead_letter("UnknownAgent: no configuration for agent nosuch version 3"),
               _dead_letter("replayed already", replayed_at="2026-12-07T03:00:00Z")]  # fmt: skip
    detail = {"conversation_id": "c1", "summary": None, "event": None, "extractions": [], "decisions": [],
              "actions": [], "dead_letters": letters}  # fmt: skip
    with answering(200, orjson.dumps(detail)) as base:
        done = postcall("explain", "c1", "--api", base, env={"COLUMNS": "300"})
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        "no decision trace for 'c1' in the store",
        "dead-lettered by the extractor: UnknownAgent: no configuration for agent nosuch version 3 "
        "(postcall.extractor.dlq.v1:0:0)",
        "fix the cause, then: postcall dlq replay --key c1 --dry-run (and again without it)",
    ]


def test_explain_of_a_call_the_store_does_not_hold_says_so() -> None:
    with answering(404, b'{"detail": "no conversation \'c1\' in the store"}') as base:
        done = postcall("explain", "c1", "--api", base, env={"COLUMNS": "300"})
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == ["no decision trace for 'c1' in the store (no conversation with that id there)"]


def test_a_variable_with_its_underscores_wrong_is_named_by_every_command() -> None:
    """POSTCALL_KAFKA_BOOTSTRAP_SERVERS (one underscore) was ignored without a word, so `postcall publish`
    published to the default 127.0.0.1:9092, whatever the variable said."""
    done = postcall(
        "topics", "list", env={"POSTCALL_KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "POSTCALL_API__URL": "http://x"}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "postcall: POSTCALL_API__URL is not a setting and is ignored: did you mean POSTCALL_API_URL?",
        "postcall: POSTCALL_KAFKA_BOOTSTRAP_SERVERS is not a setting and is ignored: did you mean "
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS? (a nested setting's parts join with __)",
    ]


@pytest.mark.parametrize(
    ("token", "detail", "hint"),
    [
        ([], "authentication required: send Authorization: Bearer <token>",
         "(give the command a token with --token or POSTCALL_API_TOKEN; `postcall api token create NAME --role "
         "viewer` makes one)"),
        (["--token", "pc_wrong"], "unknown, revoked or expired token",
         "(the token of --token or POSTCALL_API_TOKEN; `postcall api token list` shows the store's)"),
    ],
    ids=["no-token", "bad-token"],
)  # fmt: skip
@pytest.mark.parametrize(
    "command", [["explain", "c1"], ["reextract", "--ids", "c1", "--dry-run"]], ids=["explain", "reextract"]
)
def test_a_401_from_the_api_names_the_commands_token_options(
    command: list[str], token: list[str], detail: str, hint: str
) -> None:
    """The API's 401 speaks of HTTP ('send Authorization: Bearer <token>'); the command's user gives a token
    with --token or POSTCALL_API_TOKEN, which nothing said."""
    with answering(401, orjson.dumps({"detail": detail})) as base:
        done = postcall(*command, "--api", base, *token, env={"COLUMNS": "400"})
    assert done.returncode == 2, done.stderr
    assert f"HTTP 401: {detail} {hint}" in " ".join(done.stderr.split()), done.stderr


def test_eval_with_the_openai_provider_but_no_endpoint_says_so_instead_of_scoring_the_heuristic() -> None:
    """Used to run and print the heuristic's scores: `--provider openai` without an endpoint or key."""
    done = postcall("eval", "--limit", "1", "--provider", "openai")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "postcall eval: --provider openai needs an endpoint: --base-url URL, or POSTCALL_LLM__BASE_URL or "
        "POSTCALL_LLM__API_KEY"
    ]
    assert "provider:" not in done.stdout  # refused before any extraction ran


@pytest.mark.parametrize("days", ["0", "-1", "nan", "1e12"])
def test_token_create_refuses_a_lifetime_that_is_not_a_number_of_days_ahead(days: str, tmp_path: Path) -> None:
    done = postcall(
        "api", "token", "create", "ci", "--expires-days", days, "--database-url", f"sqlite:///{tmp_path / 's.db'}"
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--expires-days" in done.stderr and "pc_" not in done.stdout


def test_token_list_says_until_when_a_token_is_valid(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    made = postcall("api", "token", "create", "ci", "--expires-days", "30", "--database-url", url)
    assert made.returncode == 0 and made.stdout.startswith("pc_"), made.stderr
    assert postcall("api", "token", "create", "ops", "--database-url", url).returncode == 0
    listed = postcall("api", "token", "list", "--database-url", url).stdout.splitlines()
    ci, ops = (line.split("\t") for line in listed)
    until = datetime.now(UTC) + timedelta(days=30)
    assert ci[:3] == ["ci", "viewer", f"active until {until:%Y-%m-%d} {ci[2][-5:]}"]
    assert ops[:3] == ["ops", "viewer", "active"]


@pytest.mark.parametrize("name", ["ci\tadmin", "ops\x1b]8;;https://evil.example\x07x", "a\nb"])
def test_a_token_name_with_a_control_character_is_refused_and_one_stored_before_is_listed_escaped(
    name: str, tmp_path: Path
) -> None:
    """`token list` prints one tab-separated line per token: a tab or line break in a name made another
    column or line, and an escape sequence reached the terminal (the name is printed raw before)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    made = postcall("api", "token", "create", name, "--database-url", url)
    assert made.returncode == 2 and "printable" in made.stderr and "pc_" not in made.stdout, made

    async def stored_before() -> None:  # a name a version without the check took
        async with Store.open(DatabaseSettings(url=url)) as store, store.write() as conn:
            await conn.execute(insert(ApiToken).values(
                name=name, role="viewer", token_sha256=f"{len(name):064d}", created_at=datetime.now(UTC)
            ))  # fmt: skip

    asyncio.run(stored_before())
    listed = postcall("api", "token", "list", "--database-url", url)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 1, listed
    assert "\x1b" not in listed.stdout and listed.stdout.count("\t") == 4, listed.stdout


def test_config_validate_of_a_file_it_cannot_read_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be read (permissions, or removed while the folder is walked: a ConfigMap's old
    `..<timestamp>` folder, a checkout in progress) was a traceback, exit 1."""
    (tmp_path / "support-line.yaml").write_bytes((ROOT / "examples/agents/support-line.yaml").read_bytes())
    read_bytes = Path.read_bytes

    def unreadable(path: Path) -> bytes:
        if path.name == "support-line.yaml":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    result = CliRunner().invoke(config_app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{tmp_path}: cannot read the folder: [Errno 13] Permission denied" in result.output


def test_token_create_says_which_store_it_went_to(tmp_path: Path) -> None:
    """With no POSTCALL_DATABASE__URL the token went silently to ./postcall.db, not to the store of the API the
    user meant (make run's is in its run folder); stdout stays the token alone."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    made = postcall("api", "token", "create", "ci", "--role", "operator", "--database-url", url)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("pc_") and len(made.stdout.splitlines()) == 1
    assert made.stderr.splitlines() == [f"token 'ci' (operator) stored in sqlite+aiosqlite:///{tmp_path / 's.db'}"]


API_COMMANDS = [["explain", "c1"], ["reextract", "--ids", "c1", "--dry-run"]]


@pytest.mark.parametrize("command", API_COMMANDS, ids=[c[0] for c in API_COMMANDS])
def test_a_password_in_the_query_apis_url_is_never_shown(command: list[str]) -> None:
    """'the query API at http://ops:s3cret@... does not answer' was printed whole."""
    nowhere = f"127.0.0.1:{free_port()}"
    done = postcall(*command, "--api", f"http://ops:s3cret-pw@127.0.0.1:{free_port()}", "-b", nowhere)
    assert "s3cret-pw" not in done.stdout + done.stderr, done.stderr
    assert "query API at http://ops:***@127.0.0.1:" in done.stderr or "query API at http://127.0.0.1:" in done.stderr


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--api", "http://[::1", "--api"),
        ("--api", "localhost:8400", "--api"),
        ("--token", "pc_t\u00f6ken", "--token"),
        ("--token", "pc_token\n", "--token"),
    ],
    ids=["api-not-a-url", "api-without-scheme", "token-not-ascii", "token-with-a-line-break"],
)
@pytest.mark.parametrize("command", API_COMMANDS, ids=[c[0] for c in API_COMMANDS])
def test_a_query_api_address_or_token_that_cannot_be_used_is_a_usage_error_naming_it(
    command: list[str], option: str, value: str, named: str
) -> None:
    """Before: InvalidURL or UnicodeEncodeError with a traceback (exit 1), or 'does not answer
    (UnsupportedProtocol)' for an address without http://, then the topics read instead."""
    args = [*command, "-b", f"127.0.0.1:{free_port()}"]
    if option == "--token":
        args += ["--api", f"http://127.0.0.1:{free_port()}"]
    done = postcall(*args, option, value)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and named in done.stderr, done.stderr
    assert "Kafka" not in done.stderr, "refused before anything is read"


BROKEN_URLS = {
    "slash": "http://ops:s3cret/pw@127.0.0.1:8400",  # httpx: Invalid port: 's3cret'
    "hash": "http://ops:s3cret#pw@127.0.0.1:8400",
    "question-mark": "http://ops:s3cret?pw@127.0.0.1:8400",
    "not-ascii": "http://ops:s3cret-\u00e9/pw@127.0.0.1:8400",
    "bad-ipv6": "http://ops:s3cret@[s3cret]:8400",
    "idna-host": "http://ops:s3cret@xn--a.example",  # idna's InvalidCodepoint, not an InvalidURL
    "empty-label": "http://ops:s3cret@api..example",  # UnicodeError only when connecting
}


@pytest.mark.parametrize("url", list(BROKEN_URLS.values()), ids=list(BROKEN_URLS))
@pytest.mark.parametrize("where", ["--api", "POSTCALL_API_URL"])
def test_a_query_api_url_that_is_not_one_never_quotes_its_password(
    url: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 'Invalid value for --api: not a URL: Invalid port: 's3cret'' (a password with an unencoded /,
    ? or # ends the host there, and httpx quotes the rest as the port); an IDNA host was a traceback."""
    monkeypatch.setenv("POSTCALL_API_URL", url)
    with pytest.raises(typer.BadParameter) as refused:
        ApiClient.configured(url if where == "--api" else None, None)
    said = refused.value.format_message()
    assert "s3cret" not in said, said
    assert said.startswith(f"Invalid value for {where}: the URL"), said


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:99999", "the URL's port is not 1-65535"),
        ("http://127.0.0.1:8400 /", "the URL has a space or control character"),
    ],
)
def test_a_query_api_url_with_a_port_or_space_httpx_cannot_use_is_a_usage_error(url: str, problem: str) -> None:
    """Before: accepted (the CLI's own check had neither rule), then 'does not answer' at the first request."""
    with pytest.raises(typer.BadParameter) as refused:
        ApiClient.configured(url, None)
    assert refused.value.format_message().startswith(f"Invalid value for --api: {problem}")


def test_a_query_api_url_that_is_not_one_is_one_line_without_the_password() -> None:
    done = postcall("explain", "c1", env={"POSTCALL_API_URL": BROKEN_URLS["slash"], "COLUMNS": "300"})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "s3cret" not in done.stdout + done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "POSTCALL_API_URL" in done.stderr
    assert "the URL cannot be parsed: Invalid port (a password with" in done.stderr, done.stderr


@pytest.mark.parametrize("dry_run", [False, True], ids=["sending", "dry-run"])
def test_ctrl_c_while_the_query_api_reextracts_says_the_api_goes_on(dry_run: bool) -> None:
    """Before: exit 130 and nothing said, while the API went on republishing what it had chosen."""
    received, done_waiting = threading.Event(), threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.set()
            done_waiting.wait(30)
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    clean = {k: v for k, v in os.environ.items() if not k.startswith("POSTCALL_")}
    with serving(Slow) as base:
        command = [sys.executable, "-m", "services.cli.main", "reextract", "--ids", "c1"]
        command += ["--api", base.replace("http://", "http://ops:s3cret@"), *(["--dry-run"] if dry_run else [])]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=clean,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a shell's `&` would ignore it
        )
        try:
            assert received.wait(30), "the request never came"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            done_waiting.set()
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "s3cret" not in err, err
    if dry_run:
        assert err == "", "nothing goes on after a dry run"
    else:
        assert err.splitlines() == [
            "postcall reextract: interrupted; the query API goes on with a re-extraction it received; see its "
            f"audit: GET {base.replace('http://', 'http://ops:***@')}/api/v1/audit"
        ]


LLM_URL = "http://ops:s3cret/pw@127.0.0.1:1/v1"  # httpx: Invalid port: 's3cret'


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        (["eval", "--limit", "1", "--provider", "openai", "--model", "m", "--base-url", LLM_URL], {}, "'--base-url'"),
        (
            ["try", "-c", TRY_CALL, "-a", "examples/agents"],
            {"POSTCALL_LLM__BASE_URL": LLM_URL},
            "POSTCALL_LLM__BASE_URL",
        ),
    ],
    ids=["eval", "try"],
)
def test_an_llm_url_that_is_not_one_is_named_without_its_password(
    command: list[str], env: dict[str, str], named: str
) -> None:
    """Before: the OpenAI client's InvalidURL, with a traceback (exit 1) ending 'Invalid port: 's3cret''; the
    extractor (postcall run extractor) died the same way at start."""
    done = postcall(*command, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "s3cret" not in done.stdout + done.stderr and "Traceback" not in done.stderr, done.stderr
    said = " ".join(done.stderr.replace("│", " ").split())
    assert f"{named}: the URL cannot be parsed" in said, done.stderr


def test_a_reextraction_over_the_api_names_the_calls_another_left_it() -> None:
    """The API leaves out a call another re-extraction marked at the same moment (`skipped`, since 0013), as
    the console says ("1 left alone: ..."). The command printed '2 chosen, 1 republished' and exit 0, the
    other call unnamed and unexplained: not sent by this run, and no reason to run it again."""
    answer = {"matched": 2, "sent": 1, "dry_run": False, "items": ["c1"], "skipped": 1, "error": None}

    class Api(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            body = orjson.dumps(answer)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    from services.cli.main import app

    with serving(Api) as base:
        done = CliRunner().invoke(app, ["reextract", "--ids", "c1,c2", "--api", base], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0] == "c1" and "2 conversation(s) from the store chosen, 1 republished" in lines[-1], lines
    assert lines[1:-1] == [
        "1 conversation(s) left alone: another re-extraction chose them at the same moment and sends them"
    ], lines
