"""Preparation estimates from history, a fitted model, or the defaults (docs/ARCHITECTURE.md §10).

Pure code: the estimator (talicada/broker/estimator.py) reads the windows of
recent samples and hands them here as :class:`Summary` objects by key.

For each step the most specific key with at least ``min_samples`` samples
wins:

* **history**: the median of the key's window is the expected duration and
  its high quantile (``quantile``, 0.9) the pessimistic one. Staging keys are
  per size class (a factor of two); each sample is first moved to the size
  asked for along the fitted rate of its source, so a 1.9 GB history still
  speaks for a 1.1 GB request.
* **model**: for staging only, a size-rate line ``seconds = overhead +
  bytes / rate`` fitted per platform and source (Theil–Sen: the median of
  the slopes between every pair of samples, so a few stragglers cannot tilt
  it); the pessimistic figure scales the line by the high quantile of how far
  the samples ran over it.
* **default**: the configured :class:`~talicada.settings.Preparation`; both
  figures are the configured one.

The critical path follows the lifecycle engine: storage allocation and image
caching start together, data is staged once its storage exists, and the
launch waits for both: ``max(image, storage + slowest data) + launch``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

from talicada.broker import history
from talicada.broker.history import ANY, Sample, Step
from talicada.schema.model import kind_of
from talicada.schema.validation import ValidRequest
from talicada.settings import EstimateSettings, PlatformSettings

Basis = Literal["history", "model", "default"]
#: Weakest first: a quote is only as good as the weakest estimate on its path.
STRENGTH: Final[dict[Basis, int]] = {"default": 0, "model": 1, "history": 2}


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear between order statistics)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class RateFit:
    """``seconds = overhead + per_byte * bytes``, and how far samples ran over it."""

    overhead: float
    per_byte: float
    #: The high quantile of actual / fitted over the samples (at least 1).
    spread: float

    def seconds(self, size: int) -> float:
        """The fitted duration for ``size`` bytes."""
        return self.overhead + self.per_byte * size


def fit_rate(points: Sequence[tuple[int, float]], q: float) -> RateFit | None:
    """A Theil–Sen line through (bytes, seconds); None without two distinct sizes."""
    slopes = [
        (s2 - s1) / (b2 - b1)
        for i, (b1, s1) in enumerate(points)
        for b2, s2 in points[i + 1 :]
        if b2 != b1
    ]
    if not slopes:
        return None
    per_byte = max(0.0, statistics.median(slopes))
    overhead = max(0.0, statistics.median(s - per_byte * b for b, s in points))
    ratios = [s / fitted for b, s in points if (fitted := overhead + per_byte * b) > 0]
    spread = max(1.0, quantile(ratios, q)) if ratios else 1.0
    return RateFit(overhead, per_byte, spread)


@dataclass(frozen=True, slots=True)
class Summary:
    """What one key's window of samples says: computed once per read, then reused."""

    count: int
    seconds: tuple[float, ...]
    sizes: tuple[int | None, ...]
    rate: RateFit | None

    @classmethod
    def of(cls, samples: Sequence[Sample], q: float) -> Summary:
        """The summary of ``samples`` (a key's window, any order)."""
        points = [(s.size, s.seconds) for s in samples if s.size]
        return cls(
            count=len(samples),
            seconds=tuple(s.seconds for s in samples),
            sizes=tuple(s.size for s in samples),
            rate=fit_rate(points, q) if len(points) >= 2 else None,
        )


EMPTY = Summary(0, (), (), None)


@dataclass(frozen=True, slots=True)
class Estimate:
    """How long one step is expected to take, at worst, and on what evidence."""

    step: Step
    expected: float
    pessimistic: float
    basis: Basis
    samples: int

    @classmethod
    def default(cls, step: Step, seconds: float) -> Estimate:
        """The configured figure, with nothing behind it."""
        return cls(step, seconds, seconds, "default", 0)


def _history(step: Step, summary: Summary, q: float, minimum: int) -> Estimate | None:
    if summary.count < minimum:
        return None
    return Estimate(
        step,
        statistics.median(summary.seconds),
        quantile(summary.seconds, q),
        "history",
        summary.count,
    )


def keys_needed(platform: PlatformSettings, valid: ValidRequest) -> list[str]:
    """Every key :func:`quote` may read for ``valid`` on ``platform``."""
    name = platform.name
    kind = valid.executable_kind
    keys = [history.image_key(name, kind, None), history.launch_key(name, kind)]
    image = history.image_of(valid.request.executable)
    if image:
        keys.append(history.image_key(name, kind, image))
    if valid.request.storage:
        keys.append(history.storage_key(name))
    for item in valid.request.data:
        size, source = history.data_size(item), history.data_source(item) or ANY
        for origin in dict.fromkeys((source, ANY)):
            keys += [
                history.stage_key(name, kind_of(item), origin, size),
                history.rate_key(name, origin),
            ]
    return keys


@dataclass(frozen=True, slots=True)
class Quote:
    """The preparation of one request on one platform, step by step."""

    image: Estimate
    storage: Estimate | None
    data: tuple[Estimate, ...]
    launch: Estimate

    def _path(self, pessimistic: bool) -> float:
        def pick(estimate: Estimate) -> float:
            return estimate.pessimistic if pessimistic else estimate.expected

        storage = pick(self.storage) if self.storage else 0.0
        data = max((pick(each) for each in self.data), default=0.0)
        staged = storage + data if self.storage or self.data else 0.0
        return max(pick(self.image), staged) + pick(self.launch)

    @property
    def planned(self) -> timedelta:
        """The pessimistic critical path: what offers plan with."""
        return timedelta(seconds=self._path(pessimistic=True))

    @property
    def expected(self) -> timedelta:
        """The expected critical path."""
        return timedelta(seconds=self._path(pessimistic=False))

    def weakest(self) -> Estimate:
        """The estimate with the weakest basis (fewest samples among equals)."""
        every = [self.image, self.launch, *self.data]
        if self.storage:
            every.append(self.storage)
        return min(every, key=lambda e: (STRENGTH[e.basis], e.samples))


def _stage(
    platform: PlatformSettings,
    item_kind: str,
    size: int | None,
    source: str,
    summaries: Mapping[str, Summary],
    settings: EstimateSettings,
) -> Estimate:
    """Staging from ``source``'s history, else its model; then the same for any
    source; then the defaults."""
    name, q, minimum = platform.name, settings.quantile, settings.min_samples
    for origin in dict.fromkeys((source, ANY)):
        rate = summaries.get(history.rate_key(name, origin), EMPTY)
        bucket = summaries.get(history.stage_key(name, item_kind, origin, size), EMPTY)
        if bucket.count >= minimum:
            per_byte = rate.rate.per_byte if rate.rate and size else 0.0
            # Each sample moved to the size asked for along its source's rate.
            moved = [
                max(0.0, seconds + per_byte * ((size or 0) - (was or size or 0)))
                for seconds, was in zip(bucket.seconds, bucket.sizes, strict=True)
            ]
            return Estimate(
                "stage", statistics.median(moved), quantile(moved, q), "history", bucket.count
            )
        if size and rate.count >= minimum and rate.rate is not None:
            expected = rate.rate.seconds(size)
            return Estimate("stage", expected, expected * rate.rate.spread, "model", rate.count)
    defaults = platform.preparation
    seconds = defaults.data.get(item_kind, 0.0) + (size or 0) / defaults.staging_rate
    return Estimate.default("stage", seconds)


def quote(
    platform: PlatformSettings,
    valid: ValidRequest,
    summaries: Mapping[str, Summary],
    settings: EstimateSettings,
) -> Quote:
    """How long ``platform`` needs to prepare ``valid``, from ``summaries`` by key."""
    name, kind = platform.name, valid.executable_kind
    q, minimum = settings.quantile, settings.min_samples
    defaults = platform.preparation

    def looked_up(step: Step, keys: list[str], default: float) -> Estimate:
        for key in keys:
            found = _history(step, summaries.get(key, EMPTY), q, minimum)
            if found is not None:
                return found
        return Estimate.default(step, default)

    image_keys = [history.image_key(name, kind, None)]
    image = history.image_of(valid.request.executable)
    if image:
        image_keys.insert(0, history.image_key(name, kind, image))
    storage = None
    if valid.request.storage:
        storage = looked_up("storage", [history.storage_key(name)], defaults.storage)
    data = tuple(
        _stage(
            platform,
            kind_of(item),
            history.data_size(item),
            history.data_source(item) or ANY,
            summaries,
            settings,
        )
        for item in valid.request.data
    )
    return Quote(
        image=looked_up("image", image_keys, defaults.image.get(kind, 0.0)),
        storage=storage,
        data=data,
        launch=looked_up("launch", [history.launch_key(name, kind)], defaults.launch),
    )
