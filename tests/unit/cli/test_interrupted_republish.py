"""A command line's replay, re-extraction or release stopped by a signal (Ctrl-C, SIGTERM at 3 a.m.): the
record being sent and its replay marker are both sent first, nothing after, and the command says how far
it got. Each case runs `postcall` in a process of its own, Kafka's producer and the topic reads stood in
for, and the signal sent while a record waits for its acknowledgement."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import create_engine, text

from services.cli import reextract
from services.cli.republish import Interrupted

ROOT = Path(__file__).resolve().parents[3]
TOPIC = "postcall.router.dlq.v1"

# The stand-ins: three dead letters, three conversations, three held conversations; a producer that logs
# each record once acknowledged, and whose second record gets the signal before its acknowledgement.
SCRIPT = r"""
import asyncio, json, os, signal, sys
from types import SimpleNamespace
from services.cli import dlq, held, reextract, republish
from services.cli.main import main

LOG, SIGNUM = sys.argv[1], int(sys.argv[2])
sent, read_from = [], []

class Producer:
    async def start(self):
        if os.environ.get("SIGNAL_AT_START"):  # the signal comes while the producer connects
            os.kill(os.getpid(), SIGNUM)
            await asyncio.sleep(0.2)
    async def stop(self): pass
    async def send(self, topic, value, key=None, partition=None, headers=None):
        names = dict(headers or [])
        marker = "x-dlq-replayed" in names
        if not marker and sum(1 for s in sent if not s["marker"]) == 1:
            os.kill(os.getpid(), SIGNUM)  # the signal comes while this record waits for its ack
        await asyncio.sleep(0.05)
        sent.append({"topic": topic, "key": (key or b"").decode(), "marker": marker, "read": read_from,
                     "bootstrap": self.bootstrap, "redeliver": (names.get("x-redeliver") or b"").decode()})
        with open(LOG, "w") as f:
            json.dump(sent, f)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

class Producer(Producer):
    def __init__(self, kafka):
        self.bootstrap = kafka.bootstrap_servers

republish.producer = Producer
TOPIC, ORIGINAL = "postcall.router.dlq.v1", "postcall.conversation-extracted.v1"
headers = {"x-original-topic": ORIGINAL, "x-exception-message": "bug"}
now_ms = __import__("time").time_ns() // 1_000_000
letters = [dlq.DeadLetter(TOPIC, 0, i, now_ms, b"c%d" % i, b"{}", headers) for i in range(3)]

if os.environ.get("FIRST_HELD"):  # another replay holds the first letter's claim: a fourth one is sent instead
    letters.append(dlq.DeadLetter(TOPIC, 0, 3, now_ms, b"c3", b"{}", headers))
    claim = dlq.claims.claim

    async def claiming_all_but_the_first(store, wanted, lease):
        return await claim(store, list(wanted)[1:], lease)

    dlq.claims.claim = claiming_all_but_the_first

async def select_letters(kafka, filters):
    return letters

async def select_conversations(kafka, filters, topic):
    read_from.append(topic)
    every = [reextract.Chosen(0, i, now_ms, b"c%d" % i, b"{}", {}, f"e{i}", f"c{i}", "agent") for i in range(3)]
    return [c for c in every if filters.match(c)]

async def holding(kafka, agent, since):
    return [held.Held(f"c{i}", "agent", ("f",), "failed", "") for i in range(3)]

async def extractions(kafka, topic, since=None):
    return [SimpleNamespace(key=b"c%d" % i, value=b"{}", headers=[]) for i in range(3)]

dlq.select, reextract.select, held.held, held.read_to_end = select_letters, select_conversations, holding, extractions
sys.argv = ["postcall", *sys.argv[3:]]
main()
"""

COMMANDS = {
    "dlq replay": ["dlq", "replay", "--rate", "0"],
    "dlq replay with a store": ["dlq", "replay", "--rate", "0", "--database-url"],
    "reextract": ["reextract", "--agent", "agent", "--source", "topic", "--rate", "1000"],
    "held release": ["held", "release", "--all", "--rate", "1000"],
}


def postcall(
    tmp_path: Path,
    args: list[str],
    signum: int,
    ignored: tuple[int, ...] = (),
    columns: int = 200,
    at_start: bool = False,
    first_held: bool = False,
) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    log = tmp_path / "sent.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": str(columns),
        "POSTCALL_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
    }
    env.pop("POSTCALL_DATABASE__URL", None)
    if at_start:
        env["SIGNAL_AT_START"] = "1"
    if first_held:
        env["FIRST_HELD"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log), str(signum), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        preexec_fn=lambda: _dispositions(ignored),
    )
    return done, json.loads(log.read_text()) if log.exists() else []


def _dispositions(ignored: tuple[int, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell's `&` would ignore it
    for s in ignored:
        signal.signal(s, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_signal_stops_between_two_records_and_says_how_far_it_got(
    tmp_path: Path, command: str, signum: signal.Signals
) -> None:
    """Before: SIGTERM ended the process as the second dead letter was being sent, its replay marker never
    sent (the next `dlq replay` replayed it again), a store's claims held for the lease and nothing said;
    Ctrl-C cancelled the send the same way."""
    args = COMMANDS[command]
    store = f"sqlite:///{tmp_path / 'store.db'}"
    if args[-1] == "--database-url":
        args = [*args, f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"]
    done, sent = postcall(tmp_path, args, signum)
    records = [s for s in sent if not s["marker"]]
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 128 + signum, (done.returncode, done.stdout, done.stderr)
    assert [r["key"] for r in records] == ["c0", "c1"], "the record being sent is finished, none after it"
    if command.startswith("dlq"):
        assert len(sent) == 4, f"each replayed letter with its marker: {sent}"
    said = " ".join(done.stdout.split())
    assert f"interrupted ({signum.name})" in said, done.stdout
    assert " 2 of 3" in said, done.stdout
    if command == "dlq replay with a store":
        with create_engine(store).connect() as conn:
            rows = conn.execute(text("SELECT kafka_offset, replayed_at, replay_claim FROM dead_letters")).all()
        assert sorted((o, at is not None, claim) for o, at, claim in rows) == [
            (0, True, None),
            (1, True, None),
            (2, False, None),
        ], "sent ones marked replayed, the claim on the rest released at once"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_producer_connects_sends_nothing_and_releases_the_claims_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Before: the signal was watched only once the producer had started (which waits for the brokers):
    Ctrl-C then was a silent exit 130 and SIGTERM death by signal, and every letter stayed claimed in the
    store for the lease (300 s), so the same replay run again skipped them all as 'another replay is
    sending it'."""
    args = [*COMMANDS["dlq replay with a store"], f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"]
    done, sent = postcall(tmp_path, args, signum, at_start=True)
    assert sent == [], "nothing sent"
    assert done.returncode == 128 + signum, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert f"interrupted ({signum.name}): replayed 0 of 3" in " ".join(done.stdout.split()), done.stdout
    with create_engine(f"sqlite:///{tmp_path / 'store.db'}").connect() as conn:
        rows = conn.execute(text("SELECT replayed_at, replay_claim FROM dead_letters")).all()
    assert rows == [(None, None)] * 3, "none marked replayed, none left claimed"


def test_an_interrupted_replay_names_the_letters_it_skipped_as_another_replay_held_them(tmp_path: Path) -> None:
    """Before: only the interruption line was printed, so the letters another replay was sending (left out
    of this one) went unnamed, as they are when a replay ends."""
    args = [*COMMANDS["dlq replay with a store"], f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"]
    done, sent = postcall(tmp_path, args, signal.SIGINT, first_held=True)
    assert done.returncode == 128 + signal.SIGINT, (done.returncode, done.stdout, done.stderr)
    assert [s["key"] for s in sent if not s["marker"]] == ["c1", "c2"]
    lines = [" ".join(line.split()) for line in done.stdout.splitlines()]
    assert f"skipped {TOPIC}:0:0: another replay is sending it, or sent it since (its claim in the store)" in lines
    assert any(line.startswith("interrupted (SIGINT): replayed 2 of 3") for line in lines), done.stdout


def test_a_replay_started_under_nohup_goes_on_when_the_session_closes(tmp_path: Path) -> None:
    """`nohup postcall dlq replay ... &` is how a replay is made to outlive a dropped VPN: a signal the
    command was started ignoring (SIGHUP under nohup) is left ignored, not taken as a stop."""
    done, sent = postcall(tmp_path, COMMANDS["dlq replay"], signal.SIGHUP, ignored=(signal.SIGHUP,))
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert [s["key"] for s in sent if not s["marker"]] == ["c0", "c1", "c2"]
    assert "replayed 3 dead letter(s)" in done.stdout


def test_a_reextraction_cut_short_names_the_command_that_sends_the_rest_as_the_first_would(tmp_path: Path) -> None:
    """Before: the hint was `--source topic --ids e2` alone: run as printed, it read and sent to the default
    topic and cluster, not --topic and --bootstrap's, and without --redeliver (the changed actions of the rest
    never delivered again); in a narrow terminal the line was also cut in two, pasting half a command."""
    first = ["reextract", "--agent", "agent", "--source", "topic", "--rate", "1000", "--topic", "calls.ended.v1"]
    first += ["--redeliver", "-b", "other-kafka:9092"]
    done, sent = postcall(tmp_path, first, signal.SIGINT, columns=80)
    assert done.returncode == 128 + signal.SIGINT, (done.stdout, done.stderr)
    hint = [line for line in done.stdout.splitlines() if "interrupted (SIGINT)" in line]
    assert len(hint) == 1 and hint[0].endswith(" sends only them)"), done.stdout
    command = shlex.split(hint[0][hint[0].index("(postcall reextract ") + 1 : -len(" sends only them)")])
    assert command[:2] == ["postcall", "reextract"], hint

    (tmp_path / "resumed").mkdir()
    resumed, rest = postcall(tmp_path / "resumed", command[1:], signal.SIGINT)
    assert resumed.returncode == 0, (resumed.stdout, resumed.stderr)
    assert [r["key"] for r in rest] == ["c2"], "only the conversation not sent"
    assert [{k: v for k, v in r.items() if k != "key"} for r in rest] == [
        {k: v for k, v in r.items() if k != "key"} for r in sent[:1]
    ], "read from and sent to the same topic and cluster, with the same x-redeliver"
    assert sent[0]["read"] == ["calls.ended.v1"] and sent[0]["bootstrap"] == "other-kafka:9092"
    assert sent[0]["redeliver"] == "1"
    assert "--rate 1000" in hint[0], "at the rate asked for"


@pytest.mark.parametrize("event_id", ["e,2", " e2", "e\n2"], ids=["comma", "space", "line-break"])
def test_no_command_is_named_for_an_event_id_that_ids_would_not_take_back(
    event_id: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ids splits at commas and strips spaces, and a control character is shown escaped: a command
    naming such an id would re-extract another conversation or none."""
    chosen = [reextract.Chosen(0, i, 0, b"c", b"{}", {}, e, "c", "agent") for i, e in enumerate(["e0", event_id])]
    with pytest.raises(typer.Exit):
        reextract._interrupted(Interrupted(1, 2, signal.SIGINT), chosen, [])
    said = capsys.readouterr().out
    assert "1 of 2" in said and "not sent: from record 0:1 on" in said and "sends only them" not in said, said
