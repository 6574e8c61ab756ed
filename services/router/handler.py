"""The router's handler: consumes postcall.conversation-extracted.v1; produces one DecisionTrace to
postcall.decisions.v1 and one ActionRequested per fired action to postcall.actions.<type>.v1, all keyed
by conversation_id (schemas.routes.ROUTER says where each goes).

An agent with no configuration at all is a PermanentError (dead-lettered with that reason); an agent
whose only file is invalid (never loaded) is retryable: someone is fixing the file, and the retry tiers
give them time before the record is dead-lettered. Headers that change the routing: REDELIVER (postcall
reextract --redeliver, forwarded by the extractor) and RUN_HELD (postcall held release).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from prometheus_client import Counter

from schemas import headers as h
from schemas.events import ConversationExtracted
from schemas.routes import ROUTER
from services.common.api import Context, Event, PermanentError, RetryableError, Service
from services.router import metrics
from services.router.catalog import CatalogHolder


class RouterHandler:
    def __init__(self, catalog: CatalogHolder, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.catalog = catalog
        self.clock = clock

    async def handle(self, event: ConversationExtracted, ctx: Context) -> Sequence[Event]:
        agent = event.conversation.agent
        compiled = self.catalog.lookup(agent.id, agent.version)
        if compiled is None:
            what = f"agent {agent.id!r}" + (f" version {agent.version!r}" if agent.version else "")
            if self.catalog.is_broken(agent.id):
                raise RetryableError(f"the configuration file of {what} is invalid and was never loaded")
            raise PermanentError(f"no configuration for {what} in {self.catalog.directory}")
        options = (h.REDELIVER in ctx.headers, h.RUN_HELD in ctx.headers)
        trace, actions = compiled.route(event, self.clock(), options)
        # one increment per labelled counter, not per flow or action (as metrics.flow_outcome counts)
        fired = disabled = held = not_fired = 0
        counts: dict[Counter, int] = {}
        for flow in trace.flows:
            if flow.fired:  # only a flow that fired has actions (planned or skipped)
                fired += 1
                for result in flow.conditions:
                    if result.kind == "action":
                        counter = metrics.action_outcome(str(result.expected), result.passed)
                        counts[counter] = counts.get(counter, 0) + 1
            elif not flow.enabled:
                disabled += 1
            elif flow.held:
                held += 1
            else:
                not_fired += 1
        for outcome, count in (("fired", fired), ("disabled", disabled), ("held", held), ("not_fired", not_fired)):
            if count:
                metrics.FLOW_OUTCOMES[outcome].inc(count)
        for counter, count in counts.items():
            counter.inc(count)
        return [trace, *actions]


def service(catalog: CatalogHolder) -> Service[ConversationExtracted]:
    return Service(ROUTER, RouterHandler(catalog).handle)
