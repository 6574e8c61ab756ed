"""Runs the extractor's own code path (Extractor.extract: provider choice, transcript fitting, the
model call and its repair, normalisation, review) over labelled cases and scores what it returns.

A case whose extraction fails is scored as the `failed` record the extractor would publish (every
field empty); an outage (the endpoint unreachable, the circuit open) is recorded as a failure too, with
its reason, so a run always ends with a table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from schemas.events import Extraction
from services.extractor.evaluation.cases import Case
from services.extractor.evaluation.scoring import Scorecard
from services.extractor.handler import Extractor


async def evaluate(
    cases: Sequence[Case],
    extractor: Extractor,
    *,
    concurrency: int = 1,
    country_code: str = "1",
    progress: Callable[[int, int], None] | None = None,
) -> Scorecard:
    card = Scorecard()
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(case: Case) -> tuple[Case, Extraction, float]:
        nonlocal done
        async with gate:
            started = time.monotonic()
            try:
                extraction = await extractor.extract(case.event, case.spec)
            except Exception as exc:  # scored as the failed record the service would publish
                extraction = extractor.failed(case.spec, extractor.provider_for(case.spec)[0], exc)
            latency = (time.monotonic() - started) * 1000
        done += 1
        if progress is not None:
            progress(done, len(cases))
        return case, extraction, latency

    for case, extraction, latency in await asyncio.gather(*(one(c) for c in cases)):
        card.add(case, extraction, latency, country_code)
    return card
