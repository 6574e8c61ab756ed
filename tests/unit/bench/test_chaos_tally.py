"""The chaos receiver counts actions, not ids: a lost action is found even when another is delivered twice
under two ids, and a repeat of one id is told apart from one action under two ids."""

from __future__ import annotations

import orjson

from bench.chaos.conversations import Action, expected_actions, generate
from bench.chaos.tally import Tally, action_of


def body(conversation: str, flow: str = "every-call", index: int = 0) -> bytes:
    return orjson.dumps({"conversation": conversation, "flow": flow, "action": index, "summary": "x"})


EXPECTED: set[Action] = {("c1", "every-call", 0), ("c2", "every-call", 0), ("c2", "hangups", 0)}


def test_an_action_under_two_ids_does_not_hide_a_lost_one() -> None:
    tally = Tally(EXPECTED)
    tally.delivered("id-1", body("c1"))
    tally.delivered("id-2", body("c1"))  # the same action again, under another id
    tally.delivered("id-3", body("c2"))
    s = tally.summary()
    assert (s["lost"], s["cross_id_repeats"], s["same_id_repeats"]) == (1, 1, 0)  # c2/hangups never came
    assert not tally.passed()


def test_same_id_repeats_are_counted_but_do_not_fail_the_run() -> None:
    tally = Tally(EXPECTED)
    for wid, b in (("a", body("c1")), ("a", body("c1")), ("b", body("c2")), ("c", body("c2", "hangups"))):
        tally.delivered(wid, b)
    assert tally.summary() == {
        "expected_actions": 3,
        "delivered_actions": 3,
        "lost": 0,
        "cross_id_repeats": 0,
        "same_id_repeats": 1,
        "bad_signatures": 0,
        "unmapped": 0,
        "unexpected": 0,
    }
    assert tally.passed()


def test_bad_signatures_unmapped_and_unexpected_deliveries_fail_the_run() -> None:
    for spoil in ("bad", "unmapped", "unexpected"):
        tally = Tally(EXPECTED)
        for wid, b in (("a", body("c1")), ("b", body("c2")), ("c", body("c2", "hangups"))):
            tally.delivered(wid, b)
        if spoil == "bad":
            tally.bad_signatures += 1
        elif spoil == "unmapped":
            tally.delivered("d", b'{"conversation": "c3"}')
        else:
            tally.delivered("e", body("c9"))
        assert not tally.passed(), spoil


def test_a_body_names_its_action_or_nothing() -> None:
    assert action_of(body("c1", "hangups", 0)) == ("c1", "hangups", 0)
    assert action_of(b"not json") is None
    assert action_of(b"[1]") is None
    assert action_of(b'{"conversation": "c1", "flow": "f", "action": "0"}') is None


def test_expected_actions_follow_the_agent_every_call_and_hangups_for_customer_hangups() -> None:
    conversations = generate(50, seed=3)
    expected = expected_actions(conversations)
    hangups = sum(1 for c in conversations if c.end_reason.canonical == "CUSTOMER_HANGUP")
    assert len(expected) == 50 + hangups
    assert {flow for _, flow, _ in expected} == {"every-call", "hangups"}
