"""Realistic conversations (examples/conversations) and the kind of specs the example agents ask for."""

from __future__ import annotations

from pathlib import Path

from schemas.agents import ExtractionSpec, FieldSpec, RecipientRoute, RecipientRule, TriggerSpec
from schemas.events import ConversationEnded, Extraction
from services.extractor import heuristic
from services.extractor.handler import local_end_of

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "conversations"
CALLBACK = TriggerSpec(id="trg_callback", question="Did the customer ask to be called back?")
UNHAPPY = TriggerSpec(
    id="trg_unhappy",
    question="Did the customer express dissatisfaction, frustration, mention being unhappy, or threaten to "
    "cancel/leave negative review?",
)
HUMAN = TriggerSpec(id="trg_human", question="Did the customer ask to speak to a human?")
DEMO = TriggerSpec(id="trg_demo", question="Did the customer request a product demo?")
ROUTE = RecipientRoute(
    id="route",
    rules=[
        RecipientRule(when="billing, invoices, charges and refunds", to=["billing@copperline.example"]),
        RecipientRule(when="technical problems with the app or data", to=["tech@copperline.example"]),
        RecipientRule(when="sales leads, demos and plan upgrades", to=["sales@copperline.example"]),
    ],
    fallback=["support@copperline.example"],
)


def conversation(prefix: str) -> ConversationEnded:
    path = next(EXAMPLES.glob(f"{prefix}*.json"))
    return ConversationEnded.model_validate_json(path.read_bytes())


def spec(*fields: FieldSpec, triggers: tuple[TriggerSpec, ...] = (), dynamic: tuple[str, ...] = ()) -> ExtractionSpec:
    return ExtractionSpec(
        agent_id="support-line",
        config_revision="rev-test",
        fields=list(fields),
        triggers=list(triggers),
        dynamic_variables=list(dynamic),
        recipient_routes=[ROUTE],
    )


def extract(event: ConversationEnded, s: ExtractionSpec) -> Extraction:
    return heuristic.extract(s, event.messages or [], local_end_of(event), "1")


SUPPORT_FIELDS = (
    FieldSpec(name="customer_name", type="string", description="Customer full name"),
    FieldSpec(name="company_name", type="string", description="The customer's company"),
    FieldSpec(name="callback_number", type="phone", description="Phone number to call back"),
    FieldSpec(name="callback_at", type="datetime", description="When the customer wants to be called back"),
    FieldSpec(name="follow_up_required", type="boolean", description="Whether a follow-up call is needed"),
    FieldSpec(name="team_size", type="integer", description="Number of technicians"),
    FieldSpec(
        name="issue_category",
        type="enum",
        values=["technical", "billing", "account", "hardware", "other"],
        description="technical: app or software problems; billing: invoices, charges, refunds; "
        "account: login, plan changes; hardware: devices",
    ),
    FieldSpec(name="email", type="email", description="Customer email"),
)
SALES_FIELDS = (
    FieldSpec(name="interest_level", type="enum", values=["high", "medium", "low", "none"]),
    FieldSpec(name="budget", type="number", description="Monthly budget in dollars"),
    FieldSpec(name="demo_date", type="date", description="Date of the demo"),
    FieldSpec(name="team_size", type="integer", description="Number of technicians"),
    FieldSpec(name="email", type="email", description="Customer email"),
    FieldSpec(name="follow_up_required", type="boolean", description="Whether a follow-up call is needed"),
)
