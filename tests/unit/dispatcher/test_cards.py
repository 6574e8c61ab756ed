"""Block Kit and Adaptive Card layout: Slack's limits respected (cut, never half an escape), fields in
sections of ten, the console link encoded, Teams text only in TextRuns."""

from __future__ import annotations

from schemas.events import CardField, MessageCard
from services.dispatcher.executors.cards import adaptive_card, block_kit, console_link, cut


def test_a_cut_never_leaves_half_an_escape() -> None:
    assert cut("a" * 10, 10) == "a" * 10
    assert cut("abc &amp; def", 8) == "abc …"
    assert cut("abc &lt;", 7) == "abc …"
    assert len(cut("x" * 5000, 3000)) == 3000


def test_console_links_encode_the_id_as_one_segment() -> None:
    assert console_link("https://p.example/", "a/b?c") == "https://p.example/console/conversations/a%2Fb%3Fc"
    assert console_link(None, "x") is None


def test_more_than_ten_fields_take_more_sections_and_long_text_is_cut() -> None:
    card = MessageCard(
        title="t" * 200, fields=[CardField(label=f"L{i}", value="v" * 3000) for i in range(12)], button="b" * 75
    )
    blocks = block_kit("x" * 4000, card, "https://p.example/c")
    assert [b["type"] for b in blocks] == ["header", "section", "section", "section", "actions"]
    assert len(blocks[0]["text"]["text"]) == 150 and len(blocks[1]["text"]["text"]) == 3000
    assert [len(b["fields"]) for b in blocks[2:4]] == [10, 2]
    assert all(len(f["text"]) <= 2000 for b in blocks[2:4] for f in b["fields"])


def test_an_empty_value_still_makes_a_valid_field_and_no_link_means_no_button() -> None:
    blocks = block_kit("", MessageCard(fields=[CardField(label="Name", value="")], button="Open"), None)
    assert blocks == [{"type": "section", "fields": [{"type": "mrkdwn", "text": "*Name*\n ", "verbatim": True}]}]


def test_every_mrkdwn_text_object_is_verbatim_so_slack_parses_no_mention_or_link_in_caller_text() -> None:
    """The router escapes &, < and > (no `<!channel>`, no `<url|label>`), but a mrkdwn text object that is
    not verbatim is preprocessed by Slack: "URLs will be auto-converted into links, conversation names
    will be link-ified, and certain mentions will be automatically parsed" (Block Kit text object
    reference). verbatim keeps the author's *bold* and `<url|label>` and leaves a caller's 'http://evil',
    '#general' or '@here' plain text."""
    said = "call @here back at http://evil.example/pay, see #general"
    card = MessageCard(title="t", fields=[CardField(label="Said", value=said)], context=said, button="Open")
    blocks = block_kit(said, card, "https://p.example/c")
    texts = [b["text"] for b in blocks if b["type"] == "section" and "text" in b]
    texts += [f for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    texts += [e for b in blocks if b["type"] == "context" for e in b["elements"]]
    assert len(texts) == 3 and all(t["type"] == "mrkdwn" and t["verbatim"] is True for t in texts)


def test_a_teams_card_without_a_card_is_the_text_alone() -> None:
    message = adaptive_card("[x](https://evil.example)", None, "https://p.example/c")
    content = message["attachments"][0]["content"]
    assert content["body"] == [
        {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": "[x](https://evil.example)"}]}
    ]
    assert "actions" not in content
