"""The router's handler: consumes postcall.conversation-extracted.v1; produces one DecisionTrace to
postcall.decisions.v1 and one ActionRequested per fired action to postcall.actions.<type>.v1, all keyed
by conversation_id.

An agent with no configuration at all is a PermanentError (dead-lettered with that reason); an agent
whose only file is invalid (never loaded) is retryable: someone is fixing the file, and the retry tiers
give them time before the record is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from schemas.events import ConversationExtracted
from schemas.topics import DECISIONS, action_topic
from services.common.errors import PermanentError, RetryableError
from services.common.runtime import Emit, RecordContext
from services.router import metrics
from services.router.catalog import CatalogHolder


class RouterHandler:
    def __init__(
        self,
        catalog: CatalogHolder,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        decisions_topic: str = DECISIONS,
        topic_of: Callable[[str], str] = action_topic,
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.decisions_topic, self.topic_of = decisions_topic, topic_of  # tests route to their own topics

    async def __call__(self, event: ConversationExtracted, ctx: RecordContext, /) -> list[Emit]:
        agent = event.conversation.agent
        compiled = self.catalog.lookup(agent.id, agent.version)
        if compiled is None:
            what = f"agent {agent.id!r}" + (f" version {agent.version!r}" if agent.version else "")
            if self.catalog.is_broken(agent.id):
                raise RetryableError(f"the configuration file of {what} is invalid and was never loaded")
            raise PermanentError(f"no configuration for {what} in {self.catalog.directory}")
        trace, actions = compiled.route(event, self.clock())
        key = event.conversation.conversation_id
        for flow in trace.flows:
            metrics.FLOW_OUTCOMES["disabled" if not flow.enabled else "fired" if flow.fired else "not_fired"].inc()
            for result in flow.conditions:
                if result.kind == "action":
                    metrics.action_outcome(str(result.expected), result.passed).inc()
        return [
            Emit(self.decisions_topic, trace, key=key),
            *(Emit(self.topic_of(str(getattr(a, "type", ""))), a, key=key) for a in actions),
        ]
