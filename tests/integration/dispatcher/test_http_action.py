"""The http action against a real OAuth2 authorization server and CRM on 127.0.0.1: a flow's
PATCH /cases/{{dynamic_variables.case_id}} built by the router, sent by the dispatcher with a client
credentials token (fetched once, cached across actions, fetched again once on a 401), and the case id
from the answer in the action's result. Path traversal in a substituted value never leaves the
destination's path prefix."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schemas.events import RESPONSE_EXCERPT_CHARS, ActionBase, ActionCompleted, HttpRequested
from services.common.errors import PermanentError, RetryableError
from services.common.harness import Harness
from services.common.observability import QUIET_LIBRARIES
from services.devkit.sink import Reply, Sink
from services.dispatcher.handler import Dispatcher
from services.dispatcher.ledger import Ledger
from tests.integration.dispatcher.conftest import Stack
from tests.support.apis import Crm, serve
from tests.support.calls import ended, extracted
from tests.support.flows import route

AGENT = """
agent: support-line
flows:
  - id: update-case
    actions:
      - type: http
        destination: cases
        method: PATCH
        path: /cases/{{dynamic_variables.case_id}}
        query: {notify: "false"}
        headers: {x-call-id: "{{conversation_uuid}}"}
        body: {status: solved, note: "{{conversation_summary}}"}
        result_id_pointer: /case/id
"""


def destinations(base: str, **auth: str) -> str:
    auth_lines = "".join(f"\n      {k}: {v}" for k, v in auth.items())
    return f"""
destinations:
  - name: cases
    kind: http
    url: {base}/api/v2
    allow_private: true
    auth:
      type: oauth2_client_credentials
      token_url: {base}/oauth/token
      client_id: postcall
      client_secret: {{secret_env: CRM_CLIENT_SECRET}}{auth_lines}
"""


@pytest.fixture
async def crm() -> AsyncIterator[tuple[Crm, str]]:
    api = Crm()
    async with serve(api.app()) as base:
        yield api, base


def actions_for(tmp_path: Path, case_id: Any, name: str = "c1") -> list[ActionBase]:
    event = extracted(ended(name, dynamic_variables={"case_id": case_id}))
    _, actions = route(tmp_path / name, AGENT, event)
    return actions


def results(out: Any) -> list[ActionCompleted]:
    return [r.event for r in out.outputs if isinstance(r.event, ActionCompleted)]


async def test_patch_with_client_credentials_records_the_case_id_and_caches_the_token(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    env = {"CRM_CLIENT_SECRET": api.client_secret}
    async with stack(destinations(base), env) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        done = []
        for n, case in enumerate(["4471", "4472", "4473"]):
            [action] = actions_for(tmp_path, case, f"c{n}")
            done += results(await harness.send(action))
    assert [(r.outcome, r.status_code, r.result_id) for r in done] == [
        ("delivered", 200, "4471"),
        ("delivered", 200, "4472"),
        ("delivered", 200, "4473"),
    ]
    assert len(api.token_requests) == 1  # one token for all three actions
    [first, *_] = api.requests
    assert (first.method, first.raw_path, first.query) == ("PATCH", "/api/v2/cases/4471", {"notify": ["false"]})
    assert first.headers["authorization"] == "Bearer at-1-CANARY"
    assert first.headers["x-call-id"] == "c0"
    assert first.json() == {"status": "solved", "note": "Customer asked for a callback."}
    assert first.headers["idempotency-key"] == done[0].action_id
    assert done[0].response_excerpt is not None and '"id":"4471"' in done[0].response_excerpt


async def test_a_401_fetches_a_new_token_once_and_the_request_is_sent_again(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    async with stack(destinations(base, client_auth="body"), {"CRM_CLIENT_SECRET": api.client_secret}) as (ex, _):
        first = await ex.run(actions_for(tmp_path, "4471", "a")[0])
        api.revoke()  # the server rotates its keys: the cached token is refused
        second = await ex.run(actions_for(tmp_path, "4472", "b")[0])
        third = await ex.run(actions_for(tmp_path, "4473", "c")[0])
    assert [d.result_id for d in (first, second, third)] == ["4471", "4472", "4473"]
    assert len(api.token_requests) == 2
    assert "client_secret=" in api.token_requests[0].body.decode()  # client_auth: body
    assert [(r.raw_path, r.headers["authorization"]) for r in api.requests] == [
        ("/api/v2/cases/4471", "Bearer at-1-CANARY"),
        ("/api/v2/cases/4472", "Bearer at-1-CANARY"),  # refused with 401
        ("/api/v2/cases/4472", "Bearer at-2-CANARY"),  # the same request, once more
        ("/api/v2/cases/4473", "Bearer at-2-CANARY"),
    ]


async def test_a_refused_client_secret_is_permanent_and_never_quoted(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    async with stack(destinations(base), {"CRM_CLIENT_SECRET": "wrong-SECRET-99"}) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        out = await harness.send(actions_for(tmp_path, "4471")[0])
    assert out.status == "dead_lettered"
    [result] = results(out)
    assert result.outcome == "dead_lettered" and result.error is not None
    assert "HTTP 401 (invalid_client)" in result.error
    assert "SECRET" not in result.error and "CANARY" not in result.error
    assert api.requests == []  # no token, no request


@pytest.mark.parametrize(
    "case_id",
    ["../../admin", "..", "4471/../../../admin", "..%2F..%2Fadmin", "4471?delete=all", "4471#x", "a\\..\\..\\b"],
)
async def test_path_traversal_in_a_substituted_value_cannot_leave_the_path_prefix(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path, case_id: str
) -> None:
    api, base = crm
    async with stack(destinations(base), {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        [action] = actions_for(tmp_path, case_id)
        assert isinstance(action, HttpRequested)
        try:
            await executors.run(action)
        except Exception as exc:  # refused before sending, or the CRM's own 404 for a strange id
            assert "request refused" in str(exc) or "HTTP 404" in str(exc)
    for path in api.paths():
        assert path.startswith("/api/v2/cases/") and path.count("/") == 4, path  # one segment, under the prefix
        assert "?" not in path and "#" not in path


async def test_a_forged_record_naming_another_origin_or_prefix_is_refused_before_sending(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    [action] = actions_for(tmp_path, "4471")
    assert isinstance(action, HttpRequested)
    async with stack(destinations(base), {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        for path in ["/../admin", "/cases/%2e%2e/%2e%2e/admin", "@evil.example/x", "//evil.example/x", "/%2E%2E"]:
            forged = action.model_copy(update={"path": path})
            with pytest.raises(Exception, match="request refused"):
                await executors.run(forged)
    assert api.requests == [] and api.token_requests == []


async def test_the_token_request_goes_through_the_ssrf_guard(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    guarded = destinations(base).replace("allow_private: true", "allow_private: false")
    async with stack(guarded, {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        with pytest.raises(PermanentError, match="SSRF guard: refusing to connect"):
            await executors.run(actions_for(tmp_path, "4471")[0])
    assert api.token_requests == [] and api.requests == []


async def test_a_stalled_token_endpoint_costs_one_attempt_within_its_deadline(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path
) -> None:
    api, base = crm
    api.token_delay = 2.0
    slow = destinations(base).replace("allow_private: true", "allow_private: true\n    timeout_seconds: 0.5")
    async with stack(slow, {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        # the token would come after 2 s: only the attempt's deadline makes this fail
        with pytest.raises(RetryableError, match=r"no answer within 0.5s"):
            await executors.run(actions_for(tmp_path, "4471")[0])
    assert len(api.token_requests) == 1 and api.requests == []


async def test_oauth_tokens_and_the_client_secret_appear_in_no_result_dead_letter_or_log(
    crm: tuple[Crm, str], sink: Sink, stack: Stack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in QUIET_LIBRARIES:
        caplog.set_level(logging.WARNING, logger=name)
    api, base = crm
    sink.script("/api/ok", then=Reply(200, echo=True))  # receivers quoting our headers back
    sink.script("/api/echo400", then=Reply(400, echo=True))
    yaml = destinations(base).replace(f"url: {base}/api/v2", f"url: {sink.url('/api')}")
    [action] = actions_for(tmp_path, "4471")
    assert isinstance(action, HttpRequested)
    async with stack(yaml, {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        outs = [await harness.send(action.model_copy(update={"path": p, "action_id": p})) for p in ("/ok", "/echo400")]
    assert [r["authorization"] for r in sink.received] == ["Bearer at-1-CANARY"] * 2  # it went on the wire
    records = [r for out in outs for r in out.outputs]
    assert [out.status for out in outs] == ["ok", "dead_lettered"]
    texts = [repr(r.value) + repr(r.headers) for r in records] + [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    assert any("[redacted]" in t for t in texts)
    for secret in ("at-1-CANARY", api.client_secret):
        assert not [t for t in texts if secret in t]


def one_method(method: str, path: str, body: str, pointer: str) -> str:
    return f"""
agent: support-line
flows:
  - id: crm-{method.lower()}
    actions:
      - type: http
        destination: cases
        method: {method}
        path: {path}{body}{pointer}
"""


CASE = "/cases/{{dynamic_variables.case_id}}"
METHODS = [
    # method, path template, with a body, pointer, (status, result id) the CRM's answer gives
    ("GET", CASE, False, "/case/id", (200, "4471")),
    ("POST", "/cases", True, "/id", (201, "4472")),  # the CRM created case 4472 (its counter: token 1, case 2)
    ("PUT", CASE, True, "/case/id", (200, "4471")),
    ("PATCH", CASE, True, "/case/id", (200, "4471")),
    ("DELETE", CASE, False, "", (204, None)),
]


@pytest.mark.parametrize(("method", "path", "with_body", "pointer", "expected"), METHODS, ids=[m[0] for m in METHODS])
async def test_every_method_reaches_the_receiver_as_written(
    crm: tuple[Crm, str],
    stack: Stack,
    tmp_path: Path,
    method: str,
    path: str,
    with_body: bool,
    pointer: str,
    expected: tuple[int, str | None],
) -> None:
    api, base = crm
    body = '\n        body: {status: solved, case: "{{dynamic_variables.case_id}}"}' if with_body else ""
    agent = one_method(method, path, body, f"\n        result_id_pointer: {pointer}" if pointer else "")
    event = extracted(ended("c-method", dynamic_variables={"case_id": "4471"}))
    [action] = route(tmp_path, agent, event)[1]
    async with stack(destinations(base), {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        [done] = results(await harness.send(action))
    [seen] = api.requests
    assert (seen.method, seen.raw_path) == (method, "/api/v2" + path.replace(CASE, "/cases/4471"))
    assert seen.json() == {"status": "solved", "case": "4471"} if with_body else seen.body == b""
    assert seen.headers["authorization"] == "Bearer at-1-CANARY"
    assert seen.headers["idempotency-key"] == done.action_id
    assert (done.outcome, done.status_code, done.result_id) == ("delivered", *expected)


async def _no_results(topic: str, partition: int, from_offset: int | None) -> AsyncIterator[Any]:
    for _ in ():
        yield


async def test_a_huge_or_endless_answer_leaves_a_bounded_excerpt_and_the_id_when_it_comes_first(
    sink: Sink, stack: Stack, tmp_path: Path
) -> None:
    pad = b"x" * (5 * 1024 * 1024)
    sink.script("/api/v2/cases/4471", then=Reply(200, body=b'{"case": {"id": "4471"}}' + b" " * len(pad)))
    sink.script("/api/v2/cases/4472", then=Reply(200, body=b'{"case": {"id": "4472", "pad": "' + pad + b'"}}'))
    sink.script("/api/v2/cases/4473", then=Reply(200, endless=True))
    yaml = f"destinations:\n  - {{name: cases, kind: http, url: '{sink.url('/api/v2')}', allow_private: true}}\n"
    async with stack(yaml) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        done = []
        for n, case in enumerate(["4471", "4472", "4473"]):
            [action] = actions_for(tmp_path, case, f"big{n}")
            done += results(await harness.send(action))
    assert [(d.outcome, d.status_code) for d in done] == [("delivered", 200)] * 3  # the endless one too
    # the excerpt of a body read only in part ends in an ellipsis, without the token the read cut split
    assert (done[0].result_id, done[0].response_excerpt) == ("4471", '{"case": {"id": "4471"}} …')
    for cut in done[1:]:
        assert cut.result_id is None
        assert cut.error == "result_id_pointer /case/id: the answer is not JSON (or longer than the 64 KiB read)"
    assert done[1].response_excerpt == '{"case": {"id": "4472", "pad": " …'  # the 5 MB token is not quoted
    assert done[2].response_excerpt is not None and len(done[2].response_excerpt) == RESPONSE_EXCERPT_CHARS


@pytest.mark.timeout(30)
async def test_a_2xx_whose_connection_drops_before_the_body_is_delivered_once_without_an_id(
    sink: Sink, stack: Stack, tmp_path: Path
) -> None:
    # the CRM created the record and said so; sending the POST again would create a second one
    sink.script("/api/v2/cases/4471", Reply(201, body=b'{"case": {"id": "4471"}}', hang_up=True))
    yaml = f"destinations:\n  - {{name: cases, kind: http, url: '{sink.url('/api/v2')}', allow_private: true}}\n"
    async with stack(yaml) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        [action] = actions_for(tmp_path, "4471", "dropped")
        [done] = results(await harness.send(action))
    assert (done.outcome, done.status_code, done.result_id) == ("delivered", 201, None)
    assert len(sink.received) == 1


async def _answered_by_a_bearer_crm(sink: Sink, stack: Stack, tmp_path: Path, reply: Reply) -> Any:
    """One http action to a destination whose bearer token (tok-CANARY-0123456789) the receiver may echo."""
    sink.script("/api/v2/cases/4471", then=reply)
    yaml = (
        f"destinations:\n  - {{name: cases, kind: http, url: '{sink.url('/api/v2')}', allow_private: true,"
        " auth: {type: bearer, token: {secret_env: CRM_TOKEN}}}\n"
    )
    async with stack(yaml, {"CRM_TOKEN": "tok-CANARY-0123456789"}) as (executors, _):
        harness = Harness(Dispatcher(executors, Ledger(_no_results)).service())
        return await harness.send(actions_for(tmp_path, "4471", "bearer")[0])


async def test_an_answer_with_a_secrets_start_at_the_excerpts_end_is_delivered_with_an_excerpt_in_bounds(
    sink: Sink, stack: Stack, tmp_path: Path
) -> None:
    # "Bear" is the start of a secret ("Bearer <token>", the header we send): at the excerpt's cut it is
    # redacted, and "[redacted]" is longer than it. The CRM took the request: the result must say delivered.
    answer = b"x" * (RESPONSE_EXCERPT_CHARS - 4) + b"Bearer tokens expire after an hour"
    out = await _answered_by_a_bearer_crm(sink, stack, tmp_path, Reply(200, body=answer))
    assert (out.status, [d.outcome for d in results(out)]) == ("ok", ["delivered"])
    assert results(out)[0].response_excerpt == "x" * (RESPONSE_EXCERPT_CHARS - 10) + "[redacted]"


@pytest.mark.parametrize("status", [200, 400])
async def test_a_secret_the_read_limit_cut_is_not_kept_in_part(
    sink: Sink, stack: Stack, tmp_path: Path, status: int
) -> None:
    # the receiver echoes our Authorization header after much whitespace: the 2,048-byte read ends inside
    # the token, and the collapsed text is short, so no cut of redact's own looked at its end
    answer = b"echo:" + b" " * 2020 + b"Bearer tok-CANARY-0123456789 was sent"
    out = await _answered_by_a_bearer_crm(sink, stack, tmp_path, Reply(status, body=answer))
    [result] = results(out)
    shown = result.response_excerpt if status == 200 else result.error
    assert result.outcome == ("delivered" if status == 200 else "dead_lettered"), result
    assert shown is not None and "echo: Bearer …" in shown and "CANARY" not in shown, shown


@pytest.mark.parametrize("expires_in", ["²", "-60", "3600.5", None])
async def test_a_token_lifetime_that_is_no_number_of_seconds_is_read_as_the_default(
    crm: tuple[Crm, str], stack: Stack, tmp_path: Path, expires_in: Any
) -> None:
    # "²" is a digit to str.isdigit() and not to int(): a ValueError out of the attempt, an unknown error
    # retried with a new token request each time until the action was dead-lettered
    api, base = crm
    api.expires_in = expires_in
    async with stack(destinations(base), {"CRM_CLIENT_SECRET": api.client_secret}) as (executors, _):
        first = await executors.run(actions_for(tmp_path, "4471", "a")[0])
        second = await executors.run(actions_for(tmp_path, "4472", "b")[0])
    assert [first.result_id, second.result_id] == ["4471", "4472"]
    assert len(api.token_requests) == 1  # the token is kept for the default lifetime
