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

from schemas import headers as h
from schemas.events import ConversationExtracted
from schemas.routes import ROUTER
from services.common.api import Context, Event, PermanentError, RetryableError, Service
from services.router import metrics
from services.router.catalog import CatalogHolder

_COUNTS = (metrics.FLOWS.values, metrics.ACTIONS.values)  # counted as each record is routed


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
        trace, actions = compiled.route(event, self.clock(), options, _COUNTS)
        return [trace, *actions]


def service(catalog: CatalogHolder) -> Service[ConversationExtracted]:
    return Service(ROUTER, RouterHandler(catalog).handle)
