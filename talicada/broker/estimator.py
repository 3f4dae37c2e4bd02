"""Estimates at offer time, history at the end of each step (docs/ARCHITECTURE.md §10).

Offers are made on the hot path of ``POST /requests``, so the estimator keeps
the summary of each history key it read for ``refresh`` seconds and reads
only the keys it lacks, all in one round trip. A replica forgets the keys of
the samples it records itself at once; others see them within ``refresh``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import structlog

from talicada import constants
from talicada.broker import estimates
from talicada.broker.estimates import Quote, Summary
from talicada.broker.history import Sample, keys_for
from talicada.broker.store.samples import SampleStore
from talicada.schema.validation import ValidRequest
from talicada.settings import EstimateSettings, PlatformSettings

log = structlog.get_logger("talicada.estimates")

#: Called with each recorded sample (the metrics).
Observer = Callable[[Sample], None]


class Estimator:
    """Quotes preparation per platform from the shared history, and adds to it.

    ``clock`` (monotonic seconds) is a seam for tests of the cache.
    """

    def __init__(
        self,
        samples: SampleStore,
        settings: EstimateSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.samples = samples
        self.settings = settings
        self.clock = clock
        self.observers: list[Observer] = []
        self._cache: OrderedDict[str, tuple[float, Summary]] = OrderedDict()

    async def summaries(self, keys: Sequence[str]) -> dict[str, Summary]:
        """The summary of each key: from the cache while fresh, else read (one call)."""
        now = self.clock()
        found: dict[str, Summary] = {}
        missing: list[str] = []
        for key in dict.fromkeys(keys):
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self.settings.refresh:
                found[key] = cached[1]
            else:
                missing.append(key)
        if missing:
            for key, window in (await self.samples.windows(missing)).items():
                summary = Summary.of(window, self.settings.quantile)
                found[key] = summary
                self._cache[key] = (now, summary)
                self._cache.move_to_end(key)
            while len(self._cache) > constants.HISTORY_CACHE:
                self._cache.popitem(last=False)
        return found

    async def quotes(
        self, platforms: Sequence[PlatformSettings], valid: ValidRequest
    ) -> dict[str, Quote]:
        """The preparation of ``valid`` on each of ``platforms``, by platform name."""
        needed = {p.name: estimates.keys_needed(p, valid) for p in platforms}
        summaries = await self.summaries([key for keys in needed.values() for key in keys])
        return {p.name: estimates.quote(p, valid, summaries, self.settings) for p in platforms}

    async def record(self, samples: Sequence[Sample]) -> None:
        """Add finished steps to the history. Never raises: history is not worth a failed step."""
        if not samples:
            return
        try:
            await self.samples.append(samples, self.settings.window)
        except Exception:
            log.exception("history.failed", samples=len(samples))
            return
        for sample in samples:
            for key in keys_for(sample):
                self._cache.pop(key, None)
            log.info(
                "step.finished",
                step=sample.step,
                platform=sample.platform,
                session=sample.session,
                seconds=sample.seconds,
                expected=sample.expected,
                basis=sample.basis,
            )
            for observe in self.observers:
                observe(sample)
