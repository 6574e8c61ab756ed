"""The pure parts of bench/dispatcher.py: the bodies, the destinations file, rates, /proc parsing,
latencies, and the counting receiver's bookkeeping (its request handling called directly, no socket)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.context import BenchContext
from bench.dispatcher import (
    BARE_BACKLOG,
    BODY_BYTES,
    CONCURRENCY,
    SECRET,
    SECRET_ENV,
    Backlog,
    CountingSink,
    Sample,
    arrival_latencies,
    destinations_yaml,
    isolation_rate,
    proc_cpu_seconds,
    throughput_lines,
    webhook_body,
    window_rate,
)
from services.common.settings import KafkaSettings
from services.devkit.sink import Reply
from services.dispatcher import destinations
from services.dispatcher.destinations import HttpDestination
from services.dispatcher.signing import Signer

# ── bodies and the destinations file ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("size", [200, BODY_BYTES, 20_000])
def test_webhook_body_serialises_to_exactly_the_size_asked(size: int) -> None:
    assert len(orjson.dumps(webhook_body(7, size))) == size


def test_webhook_bodies_differ_per_action() -> None:
    assert webhook_body(1) != webhook_body(2)


def test_destinations_yaml_loads_as_signed_loopback_destinations_with_default_waiting() -> None:
    urls = {"d0": "http://127.0.0.1:9/slow", "d1": "http://127.0.0.1:9/iso-d1"}
    loaded = destinations.parse(destinations_yaml(urls), {SECRET_ENV: SECRET})
    assert list(loaded) == ["d0", "d1"]
    for name, dest in loaded.items():
        assert isinstance(dest, HttpDestination)
        assert dest.endpoint == urls[name]
        assert dest.allow_private and dest.signer is not None
        assert dest.max_concurrency == CONCURRENCY
        assert dest.max_waiting is None  # the registry's default bounded waiting applies


def test_destinations_yaml_needs_the_secret_in_the_environment() -> None:
    with pytest.raises(destinations.ConfigError):
        destinations.parse(destinations_yaml({"crm": "http://127.0.0.1:9/x"}), {})


# ── rates, CPU, latencies ──────────────────────────────────────────────────────────────────────


def test_window_rate_counts_the_half_open_window_per_second() -> None:
    times = [0.5, 1.0, 1.5, 2.9, 3.0, 4.0]
    assert window_rate(times, 1.0, 3.0) == 1.5  # 1.0, 1.5, 2.9; 3.0 is outside


def test_window_rate_of_an_empty_window_is_an_error() -> None:
    with pytest.raises(ValueError):
        window_rate([1.0], 2.0, 2.0)


def test_proc_cpu_seconds_adds_user_and_system_time_whatever_the_command_name() -> None:
    rest = " ".join(["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "50", "0", "0"])
    stat = f"4242 (python -m (x) y) {rest} 20 0 1"
    assert proc_cpu_seconds(stat, 100) == 3.0


def test_arrival_latencies_take_the_first_arrival_of_known_actions_only() -> None:
    sent = {"a": 10.0, "b": 11.0}
    arrived = [["a", 10.2], ["x", 10.3], ["b", 11.5], ["a", 12.0]]
    assert sorted(arrival_latencies(arrived, sent)) == pytest.approx([0.2, 0.5])


# ── the counting receiver ──────────────────────────────────────────────────────────────────────


def signed(msg_id: str, body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in Signer([SECRET]).headers(msg_id, body).items()}


def test_counting_sink_counts_deliveries_repeats_and_unverified_requests() -> None:
    sink = CountingSink([SECRET], quiet=True)
    body = b'{"n":1}'
    sink._route("POST", "/iso-t-d1", signed("a1", body), body)
    sink._route("POST", "/iso-t-d1", signed("a1", body), body)  # a repeat
    sink._route("POST", "/bare-x", {"webhook-id": "a2"}, body)  # unsigned
    sink._route("POST", "/iso-t-d2", {**signed("a3", body), "webhook-signature": "v1,AAAA"}, body)  # bad
    stats = orjson.loads(sink._route("GET", "/stats", {}, b"").body)
    assert stats == {"paths": {"/iso-t-d1": 1, "/bare-x": 1, "/iso-t-d2": 1}, "unverified": 2, "repeats": 1}


def test_counting_sink_lists_arrivals_under_a_prefix() -> None:
    sink = CountingSink([SECRET], quiet=True)
    for path, msg_id in (("/iso-t-d1", "a1"), ("/iso-t-d2", "a2"), ("/iso-u-d1", "a3")):
        sink._route("POST", path, signed(msg_id, b"{}"), b"{}")
    arrivals = orjson.loads(sink._route("GET", "/arrivals/iso-t-", {}, b"").body)
    assert sorted(arrivals) == ["/iso-t-d1", "/iso-t-d2"]
    assert [pair[0] for pair in arrivals["/iso-t-d1"]] == ["a1"]


def test_counting_sink_keeps_the_scripted_answers() -> None:
    sink = CountingSink([SECRET], quiet=True)
    sink.script("/slow", then=Reply(delay=2.0))
    assert sink._route("POST", "/slow", signed("a1", b"{}"), b"{}").delay == 2.0
    assert sink._route("POST", "/fast", signed("a2", b"{}"), b"{}").delay == 0.0


# ── the throughput lines ───────────────────────────────────────────────────────────────────────


def test_the_backlog_line_is_judged_against_bare_runs_of_its_own_size() -> None:
    """The backlog (2,000) against the bare loop's runs of 2,000, not its runs of N (runs of unequal
    length: on the bench machine a run's first seconds are slower on both sides); the longer runs'
    ratio stays in the summary as information."""
    samples = {
        "bare httpx": [Sample(900.0, 1100.0, 110.0), Sample(880.0, 1120.0, 110.0)],
        "dispatcher in-process": [Sample(910.0, 1080.0, 110.0)],
        "dispatcher via Kafka": [Sample(760.0, 1300.0, 110.0)],
        BARE_BACKLOG: [Sample(740.0, 1330.0, 110.0), Sample(750.0, 1320.0, 110.0)],
    }
    bursts = [Backlog(2000, 2000, 640.0, 0), Backlog(2000, 2000, 620.0, 0)]
    lines = {line["label"]: line for line in throughput_lines(10_000, samples, bursts)}
    backlog = lines["dispatcher via Kafka, default settings, a backlog of 2,000 for one destination"]
    assert backlog["baseline"] == 750.0 and backlog["baseline_samples"] == [740.0, 750.0]
    assert backlog["ratio"] == pytest.approx(640 / 750) and backlog["passed"] is True
    assert "bare httpx sending 2,000" in backlog["text"]
    longer = lines["the backlog against the bare loop's longer runs"]
    assert longer["text"].startswith(f"the backlog against the bare loop's longer runs: {640 / 900:.2f} of bare httpx")
    via = lines["dispatcher via Kafka, 1 KB webhooks, 16 connections"]
    assert via["baseline"] == 900.0


def test_a_repeated_webhook_id_is_not_counted_as_a_delivery() -> None:
    """Every clock here stops on the receiver's counts and every rate counts its arrivals: an action
    delivered twice must add to "repeats" only, or it would stop a clock early and add to a rate."""
    sink = CountingSink([SECRET], quiet=True)
    body = b'{"n":1}'
    for msg_id in ("a1", "a2", "a1", "a1"):
        sink._route("POST", "/kafka-r0", signed(msg_id, body), body)
    stats = orjson.loads(sink._route("GET", "/stats", {}, b"").body)
    assert stats["paths"] == {"/kafka-r0": 2} and stats["repeats"] == 2
    arrivals = orjson.loads(sink._route("GET", "/arrivals/kafka-", {}, b"").body)
    assert [pair[0] for pair in arrivals["/kafka-r0"]] == ["a1", "a2"]


def test_a_smoke_runs_isolation_is_offered_the_floor_not_half_its_tiny_via_kafka_rate(tmp_path: Path) -> None:
    """10 records via Kafka read 4,016/s in a smoke run: the isolation runs were offered 1,810/s and, on a
    loaded machine, waited out their 60 s each."""
    kafka = KafkaSettings(bootstrap_servers="fake:9092")
    assert isolation_rate(BenchContext(kafka, tmp_path, tmp_path, smoke=True), [4_016.0]) == 50.0
    assert isolation_rate(BenchContext(kafka, tmp_path, tmp_path), [1_020.0, 998.0]) == 510.0
    assert isolation_rate(BenchContext(kafka, tmp_path, tmp_path), [40.0]) == 50.0
