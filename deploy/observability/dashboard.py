"""The Grafana dashboard, written as code: `python -m deploy.observability.dashboard [--check]`.

Writes deploy/observability/grafana-dashboard.json (Grafana 11, a Prometheus data source chosen by a
variable) through Grafana's own typed builders (grafana-foundation-sdk), so every panel, query and
variable carries the fields Grafana's schema requires. Every query uses only metrics the services
export (tests/contract/test_observability.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

OUT = Path(__file__).resolve().parent / "grafana-dashboard.json"
DS = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
NS = 'namespace=~"$namespace"'
SVC = f'{NS}, service=~"$service"'
MAIN = f"{SVC}, topic!~`.+\\.retry-[0-9]+\\.v1`"  # the retry tiers' lag is waiting on purpose
RETRY = f"{SVC}, topic=~`.+\\.retry-[0-9]+\\.v1`"
RATE = "$__rate_interval"
# the service dropdown lists the `service` values of these: every consumer counts what it consumes, the
# ingress what it produces. (The api's metrics carry no `service`: its panels are not filtered by it.)
SERVICE_SERIES = ("postcall_records_consumed_total", "postcall_records_produced_total")


@dataclass
class Panel:
    title: str
    description: str
    queries: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    stack: bool = False


def per_second(metric: str, by: str, selector: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def quantiles(metric: str, by: str, selector: str) -> list[tuple[str, str]]:
    rate = f"sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}]))"
    return [(f"histogram_quantile({q}, {rate})", f"p{round(q * 100)} {{{{{by}}}}}") for q in (0.5, 0.99)]


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Ingress: vendor webhooks",
        [
            Panel(
                "Webhook requests / s by source and outcome",
                "published, duplicate, ignored (not a finished call), unauthorized (signature), bad_request, "
                "invalid (payload), mapping_error (a part our mapping built was refused: possibly our bug), "
                "too_large, not_found, unavailable (Kafka: answered 503, the vendor retries), overloaded (503: bodies "
                "in flight at their limit), error (500: the ingress failed itself, a bug of ours).",
                [
                    (
                        f"sum by (source, outcome) (rate(postcall_ingress_requests_total{{{NS}}}[{RATE}]))",
                        "{{source}} {{outcome}}",
                    )
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "Webhook answer time p50 / p99",
                "Request arrival to answer; a published event's answer waits for the brokers' acknowledgement.",
                quantiles("postcall_ingress_request_duration_seconds", "source", NS),
                "s",
            ),
            Panel(
                "Publish to broker acknowledgement p50 / p99",
                "Producer send to acks=all acknowledgement, per ingress pod.",
                quantiles("postcall_ingress_publish_duration_seconds", "pod", NS),
                "s",
            ),
        ],
    ),
    (
        "Flow",
        [
            Panel(
                "Records processed / s",
                "Records finished by each service, by outcome (ok, retried, dead_lettered, internal_error), and "
                "unavailable: records that began waiting for an unavailable dependency (each once; it finishes "
                "later as one of the others).",
                [(per_second("postcall_records_processed_total", "service, outcome", SVC), "{{service}} {{outcome}}")],
                "ops",
                stack=True,
            ),
            Panel(
                "Consumer lag (main topics)",
                "Log end offset minus the next offset to commit, summed over partitions. The low-watermark commit "
                "overstates it by up to the records in flight.",
                [(f"sum by (service, topic) (postcall_consumer_lag_records{{{MAIN}}})", "{{service}} {{topic}}")],
            ),
            Panel(
                "Records in flight",
                "Taken from Kafka and not finished, per pod (capped by POSTCALL_RUNTIME__MAX_IN_FLIGHT).",
                [(f"sum by (service, pod) (postcall_in_flight_records{{{SVC}}})", "{{pod}}")],
            ),
            Panel(
                "Handler latency p50 / p99",
                "Time one handler call took, by service.",
                quantiles("postcall_handler_duration_seconds", "service", SVC),
                "s",
            ),
            Panel(
                "Consumed and produced / s",
                "Records read from and acknowledged to each topic.",
                [
                    (f"sum by (topic) (rate(postcall_records_consumed_total{{{SVC}}}[{RATE}]))", "in {{topic}}"),
                    (f"sum by (topic) (rate(postcall_records_produced_total{{{SVC}}}[{RATE}]))", "out {{topic}}"),
                ],
                "ops",
            ),
            Panel(
                "Retry tiers waiting",
                "Records in retry-tier topics not yet committed; they wait for their due time on purpose.",
                [(f"sum by (service, topic) (postcall_consumer_lag_records{{{RETRY}}})", "{{topic}}")],
            ),
        ],
    ),
    (
        "Failures and flow control",
        [
            Panel(
                "Retries / s",
                "Records sent to a retry tier, by service and tier.",
                [(per_second("postcall_retries_total", "service, tier", SVC), "{{service}} tier {{tier}}")],
                "ops",
                stack=True,
            ),
            Panel(
                "Dead letters",
                "Records sent to a dead-letter topic in each interval, by service and category. "
                "Replay with `postcall dlq replay` (docs/operations.md).",
                [
                    (
                        f"sum by (service, category) (increase(postcall_dead_letters_total{{{SVC}}}[{RATE}]))",
                        "{{service}} {{category}}",
                    )
                ],
                stack=True,
            ),
            Panel(
                "Paused partitions",
                "Partitions paused for backpressure (in-flight cap), retry due times or an unavailable dependency.",
                [(f"sum by (service, pod) (postcall_paused_partitions{{{SVC}}})", "{{pod}}")],
            ),
            Panel(
                "Dependency pauses",
                "1 while a pod pauses all consumption for an unavailable dependency (LLM outage, broker trouble).",
                [(f"max by (service, pod) (postcall_dependency_paused{{{SVC}}})", "{{pod}}")],
            ),
            Panel(
                "Commits / s",
                "Offset commits by result. Failures during a rebalance are normal; failures with no success are not.",
                [(per_second("postcall_commits_total", "service, result", SVC), "{{service}} {{result}}")],
                "ops",
            ),
            Panel(
                "Rebalances",
                "Partitions revoked and assigned. Every scale step and every rollout of a pod shows here.",
                [
                    (
                        f"sum by (service, kind) (increase(postcall_rebalances_total{{{SVC}}}[{RATE}]))",
                        "{{service}} {{kind}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Extractor: LLM",
        [
            Panel(
                "LLM tokens / s",
                "Tokens reported by the model, by kind (prompt, completion, cached).",
                [(f"sum by (model, kind) (rate(postcall_llm_tokens_total{{{NS}}}[{RATE}]))", "{{model}} {{kind}}")],
                "short",
                stack=True,
            ),
            Panel(
                "LLM cost (USD / hour)",
                "Estimated from the price table in the extractor settings.",
                [(f"sum by (model) (rate(postcall_llm_cost_usd_total{{{NS}}}[{RATE}])) * 3600", "{{model}}")],
                "currencyUSD",
            ),
            Panel(
                "LLM cost over the range",
                "Estimated spend over the dashboard's time range.",
                [(f"sum(increase(postcall_llm_cost_usd_total{{{NS}}}[$__range]))", "USD")],
                "currencyUSD",
                kind="stat",
            ),
            Panel(
                "LLM requests / s",
                "By outcome: ok, invalid, refused, rate_limited, server_error, timeout, connection_error, ...",
                [
                    (
                        f"sum by (model, outcome) (rate(postcall_llm_requests_total{{{NS}}}[{RATE}]))",
                        "{{model}} {{outcome}}",
                    )
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "LLM latency p50 / p99",
                "One chat-completions request (or one heuristic pass).",
                quantiles("postcall_llm_request_duration_seconds", "model", NS),
                "s",
            ),
            Panel(
                "LLM circuit open",
                "1 while the provider's circuit breaker is open; extraction then pauses instead of failing.",
                [(f"max by (provider) (postcall_llm_circuit_open{{{NS}}})", "{{provider}}")],
            ),
            Panel(
                "Extractions / s",
                "Conversations extracted, by provider and status; transcripts cut to the token budget; and "
                "copies skipped (an event id already taken from another record: a vendor retry through "
                "another ingress replica).",
                [
                    (
                        f"sum by (provider, status) (rate(postcall_extractions_total{{{NS}}}[{RATE}]))",
                        "{{provider}} {{status}}",
                    ),
                    (per_second("postcall_transcripts_truncated_total", "model", NS), "truncated {{model}}"),
                    (f"sum(rate(postcall_extractor_duplicates_skipped_total{{{NS}}}[{RATE}]))", "copies skipped"),
                ],
                "ops",
            ),
        ],
    ),
    (
        "Router",
        [
            Panel(
                "Flows / s",
                "Flows evaluated, by outcome (fired, not_fired, disabled, held: extraction failed and the flow "
                "uses it).",
                [(f"sum by (outcome) (rate(postcall_router_flows_total{{{NS}}}[{RATE}]))", "{{outcome}}")],
                "ops",
                stack=True,
            ),
            Panel(
                "Actions / s",
                "Actions by type and outcome (planned, skipped).",
                [
                    (
                        f"sum by (type, outcome) (rate(postcall_router_actions_total{{{NS}}}[{RATE}]))",
                        "{{type}} {{outcome}}",
                    )
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "Agent configurations",
                "Configurations loaded, problems in the configuration folder, reloads in each interval, and "
                "failed: 1 while a change could not be loaded at all (router and extractor read the same "
                "folder, each on its own).",
                [
                    (f"max by (pod) (postcall_router_config_agents{{{NS}}})", "agents {{pod}}"),
                    (f"max by (pod) (postcall_router_config_problems{{{NS}}})", "problems {{pod}}"),
                    (
                        f"sum by (result) (increase(postcall_router_config_reloads_total{{{NS}}}[{RATE}]))",
                        "reloads {{result}}",
                    ),
                    (f"max by (pod) (postcall_router_config_reload_failed{{{NS}}})", "failed {{pod}}"),
                    (f"max by (pod) (postcall_extractor_config_agents{{{NS}}})", "agents {{pod}}"),
                    (f"max by (pod) (postcall_extractor_config_problems{{{NS}}})", "problems {{pod}}"),
                    (
                        f"sum by (result) (increase(postcall_extractor_config_reloads_total{{{NS}}}[{RATE}]))",
                        "extractor reloads {{result}}",
                    ),
                    (f"max by (pod) (postcall_extractor_config_reload_failed{{{NS}}})", "failed {{pod}}"),
                ],
            ),
        ],
    ),
    (
        "Dispatcher: deliveries",
        [
            Panel(
                "Deliveries / s by destination and outcome",
                "delivered, published, failed, skipped_duplicate, dead_lettered; deferred: not attempted (the "
                "destination's rate limit or waiting room was full), retried.",
                [
                    (
                        f"sum by (destination, outcome) (rate(postcall_deliveries_total{{{NS}}}[{RATE}]))",
                        "{{destination}} {{outcome}}",
                    )
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "Delivery latency p50 / p99",
                "One delivery attempt, request to response, by destination.",
                quantiles("postcall_delivery_duration_seconds", "destination", NS),
                "s",
            ),
            Panel(
                "Destinations disabled or circuit open",
                "Disabled: the destination answered 410 Gone, on every replica and across restarts until "
                "`postcall destinations enable`. Circuit open: failing, probed again soon.",
                [
                    (f"max by (destination) (postcall_destination_disabled{{{NS}}})", "disabled {{destination}}"),
                    (f"max by (destination) (postcall_destination_circuit_open{{{NS}}})", "open {{destination}}"),
                ],
            ),
            Panel(
                "Rate-limit share per replica",
                "Requests per second each dispatcher pod may send to a rate-limited destination now: the "
                "destination's limit split among the live replicas that have work for it.",
                [(f"max by (pod, destination) (postcall_destination_rate_share{{{NS}}})", "{{pod}} {{destination}}")],
                "reqps",
            ),
            Panel(
                "Ledger entries",
                "Completed action ids in the idempotency ledger's index, per results partition.",
                [(f"sum by (partition) (postcall_ledger_entries{{{NS}}})", "partition {{partition}}")],
            ),
            Panel(
                "Ledger index size",
                "The ledger's index file on each dispatcher pod's `ledger` volume (alert at 3 GiB of its 4 GiB).",
                [(f"max by (pod) (postcall_ledger_index_bytes{{{NS}}})", "{{pod}}")],
                unit="bytes",
            ),
        ],
    ),
    (
        "Store and query API",
        [
            Panel(
                "Recorder rows / s",
                "Rows written to the store by table, and records skipped (older than the store's retention).",
                [
                    (per_second("postcall_recorder_rows_total", "table", NS), "{{table}}"),
                    (per_second("postcall_recorder_skipped_total", "reason", NS), "skipped {{reason}}"),
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "Recorder batches",
                "Time to write one batch (group commit: the records in flight together) and records per batch. "
                "A rising write time with full batches: the database is the limit.",
                [
                    *quantiles("postcall_recorder_batch_duration_seconds", "pod", NS),
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate(postcall_recorder_batch_records_bucket{{{NS}}}"
                        f"[{RATE}])))",
                        "records per batch p50",
                    ),
                ],
                "s",
            ),
            Panel(
                "Store retention",
                "Rows deleted by the pruning job, by table (hourly).",
                [
                    (
                        f"sum by (table) (increase(postcall_store_pruned_rows_total{{{NS}}}[1h]))",
                        "{{table}}",
                    )
                ],
            ),
            Panel(
                "API requests / s",
                "Query API requests by route and HTTP status (401/403: refused, 503: store or Kafka unavailable).",
                [
                    (
                        f"sum by (route, status) (rate(postcall_api_requests_total{{{NS}}}[{RATE}]))",
                        "{{route}} {{status}}",
                    )
                ],
                "ops",
                stack=True,
            ),
            Panel(
                "API latency p50 / p99",
                "Server time of one request, by route.",
                quantiles("postcall_api_request_duration_seconds", "route", NS),
                "s",
            ),
        ],
    ),
]


def _variables() -> list[dash_b.QueryVariable | dash_b.DatasourceVariable]:
    def query(name: str, multi: bool) -> dash_b.QueryVariable:
        series = "postcall_records_consumed_total"
        if name == "service":  # the consumers and the ingress (which produces the pipeline's input, consumes nothing)
            series = f'{{__name__=~"{"|".join(SERVICE_SERIES)}", {NS}}}'
        return (
            dash_b.QueryVariable(name)
            .label(name)
            .datasource(DS)
            .query({"query": f"label_values({series}, {name})", "refId": name})
            .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .multi(multi)
            .current(dash_m.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        )

    source = dash_b.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
    # All is `.*`, every service, rather than the listed values as a regex
    return [source, query("namespace", True), query("service", True).all_value(".*")]


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> timeseries.Panel | stat.Panel:
    built: timeseries.Panel | stat.Panel
    if panel.kind == "stat":
        built = stat.Panel().reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
    else:
        mode = common_m.StackingMode.NORMAL if panel.stack else common_m.StackingMode.NONE
        legend = common_b.VizLegendOptions().display_mode(common_m.LegendDisplayMode.LIST)
        built = (
            timeseries.Panel()
            .stacking(common_b.StackingConfig().mode(mode))
            .fill_opacity(10)
            .legend(legend.placement(common_m.LegendPlacement.BOTTOM).show_legend(True).calcs([]))
            .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI).sort(common_m.SortOrder.NONE))
        )
    built.id(panel_id).title(panel.title).description(panel.description).datasource(DS).unit(panel.unit)
    built.grid_pos(dash_m.GridPos(h=8, w=12, x=x, y=y))
    for i, (expr, legend_format) in enumerate(panel.queries):
        target = prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(DS).expr(expr)
        built.with_target(target.legend_format(legend_format))
    return built


def dashboard() -> dash_m.Dashboard:
    board = (
        dash_b.Dashboard("postcall")
        .uid("postcall-overview")
        .description("Post-call automation on Kafka: extractor, router, dispatcher. See docs/operations.md.")
        .tags(["postcall", "kafka"])
        .timezone("")
        .editable()
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .version(1)
        .time("now-6h", "now")
        .variables(_variables())  # type: ignore[arg-type]
    )
    y, next_id = 0, 1
    for title, row in ROWS:
        board.with_row(dash_b.Row(title).id(next_id).collapsed(False).grid_pos(dash_m.GridPos(h=1, w=24, x=0, y=y)))
        next_id, y = next_id + 1, y + 1
        for index, panel in enumerate(row):
            board.with_panel(_panel(panel, next_id, 12 * (index % 2), y + 8 * (index // 2)))
            next_id += 1
        y += 8 * ((len(row) + 1) // 2)
    return board.build()


def render() -> str:
    return json.dumps(json.loads(JSONEncoder().encode(dashboard())), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="Write nothing; exit 1 if the file is out of date.")
    args = parser.parse_args(argv)
    text = render()
    if OUT.exists() and OUT.read_text() == text:
        print("up to date")
        return 0
    if args.check:
        print(f"out of date: {OUT.name}; run `python -m deploy.observability.dashboard`", file=sys.stderr)
        return 1
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
