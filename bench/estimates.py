"""Benchmark: how well preparation estimates from history predict what steps take.

Issue 13, must-show 1: replay a synthetic history generated from a known
model, with noise and drift, and report the median absolute percentage error
(MdAPE) of the broker's estimates against that of the static defaults.
PASS when the estimates' MdAPE is under 15%.

The model (seeded, so every run replays the same history):

* **data staging** of SKAO objects to one platform from three replica sites,
  each ``overhead + bytes / rate``, sizes log-uniform from 50 MB to 5 GB:
  ``near`` (5 s, 250 MB/s), ``far`` (20 s, 40 MB/s; its link is upgraded to
  80 MB/s halfway through: a step drift) and ``thin`` (60 s, 4 MB/s, slowly
  degrading to 2.5 MB/s: a gradual drift);
* **image caching** of six images: 1 s when the site's pull-through cache has
  the image, else 3 s plus its size at 60 MB/s; an image is cached once pulled,
  but evicted again before 15% of its later uses;
* **launch** of three executable kinds (ping, delay, docker-container) at 8,
  25 and 45 s, the second creeping up by half over the run.

Every duration carries log-normal noise (σ = 0.15) and 2% of steps straggle
at three times their time. Steps come in random order. For each, the script
asks the broker's :class:`~talicada.broker.estimator.Estimator` for a quote
*before* recording the step, exactly as an offer would, then records it as
the broker does when the step's worker reports. The quote used is the
expected (median) figure; the planned (pessimistic) one is reported as how
often a step overran it. The static defaults are the shipped ``Preparation``.

No Redis, no HTTP: the estimator over the memory sample store (the Redis
store holds the same windows). Runs in seconds; exits 0 whatever the result.

    .venv/bin/python bench/estimates.py            # 3,000 steps
    .venv/bin/python bench/estimates.py --quick    # 600 steps
"""

from __future__ import annotations

import os
import sys

# Keep this directory off the import path, and make the working tree's talicada importable.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import structlog  # noqa: E402

from talicada.broker.estimator import Estimator  # noqa: E402
from talicada.broker.history import Sample  # noqa: E402
from talicada.broker.store.samples import MemorySamples  # noqa: E402
from talicada.schema.validation import ValidRequest, parse_request  # noqa: E402
from talicada.settings import EstimateSettings, PlatformSettings, SrcnetSettings  # noqa: E402

TARGET = 0.15
NOW = datetime(2030, 1, 1, tzinfo=UTC)
MB = 10**6
PLATFORM = PlatformSettings(
    name="site",
    stager="srcnet",
    srcnet=SrcnetSettings(url="http://127.0.0.1:9/srcnet", storage_area="area"),
    executables=["ping", "delay", "checksum", "docker-container"],
    data=["skao-data-resource"],
)
DOCKER = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0"
SKAO = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/skao-data-resource-1.0"


@dataclass(frozen=True)
class Step:
    """One step of the synthetic history: what it was, and what it really took."""

    kind: str  # stage, image or launch
    request: ValidRequest
    sample: Sample


def _noisy(rng: random.Random, seconds: float) -> float:
    seconds *= math.exp(rng.gauss(0, 0.15))
    return seconds * 3 if rng.random() < 0.02 else seconds


def _staging(rng: random.Random, progress: float) -> tuple[str, float, Callable[[int], float]]:
    site = rng.choice(["near", "far", "thin"])
    if site == "near":
        return site, 5, lambda size: size / (250 * MB)
    if site == "far":
        rate = 40 * MB if progress < 0.5 else 80 * MB
        return site, 20, lambda size: size / rate
    rate = (4 - 1.5 * progress) * MB
    return site, 60, lambda size: size / rate


def history(steps: int, seed: int) -> list[Step]:
    """The synthetic history: ``steps`` steps drawn from the model, in order."""
    rng = random.Random(seed)
    images = {f"registry.example/tool-{n}:1": (n + 1) * 400 * MB for n in range(6)}
    launches = {"ping": 8.0, "delay": 25.0, "docker-container": 45.0}
    pulled: set[str] = set()
    out = []
    for index in range(steps):
        progress = index / steps
        kind = rng.choices(["stage", "image", "launch"], weights=[6, 2, 2])[0]
        if kind == "stage":
            site, overhead, transfer = _staging(rng, progress)
            size = int(math.exp(rng.uniform(math.log(50 * MB), math.log(5000 * MB))))
            block = {
                "namespace": "survey",
                "objectname": f"obj-{index}",
                "datasize": size,
                "replicas": [{"rsename": site}],
            }
            request = {
                "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
                "data": [{"kind": SKAO, "skao": block}],
            }
            seconds = _noisy(rng, overhead + transfer(size))
            sample = Sample(
                step="stage",
                platform="site",
                seconds=seconds,
                finished=index,
                kind="skao-data-resource",
                size=size,
                source=site,
            )
        elif kind == "image":
            image, size = rng.choice(list(images.items()))
            # The pull-through cache keeps an image once pulled, until evicted.
            cached = image in pulled and rng.random() > 0.15
            pulled.add(image)
            request = {"executable": {"kind": DOCKER, "image": {"locations": [image]}}}
            seconds = _noisy(rng, 1.0 if cached else 3 + size / (60 * MB))
            sample = Sample(
                step="image",
                platform="site",
                seconds=seconds,
                finished=index,
                kind="docker-container",
                image=image,
                size=size,
                cached=cached,
            )
        else:
            task, base = rng.choice(list(launches.items()))
            if task == "delay":
                base *= 1 + 0.5 * progress
            request = {"executable": {"kind": f"urn:talicada:kinds:executable:{task}-1.0"}}
            if task == "docker-container":
                request = {"executable": {"kind": DOCKER, "image": {"locations": ["x:1"]}}}
            seconds = _noisy(rng, base)
            sample = Sample(
                step="launch", platform="site", seconds=seconds, finished=index, kind=task
            )
        out.append(Step(kind, parse_request(request, now=NOW), sample))
    return out


def _quoted(step: Step, quote: Any) -> tuple[float, float]:
    if step.kind == "stage":
        (estimate,) = quote.data
    elif step.kind == "image":
        estimate = quote.image
    else:
        estimate = quote.launch
    return estimate.expected, estimate.pessimistic


async def replay(steps: list[Step], settings: EstimateSettings) -> dict[str, Any]:
    """Quote each step before recording it, with history and with the defaults alone."""
    estimator = Estimator(MemorySamples(), settings)
    static = Estimator(MemorySamples(), settings)  # never told anything: defaults only
    errors: dict[str, list[float]] = defaultdict(list)
    defaults: dict[str, list[float]] = defaultdict(list)
    overruns: dict[str, int] = defaultdict(int)
    bases: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for step in steps:
        quote = (await estimator.quotes([PLATFORM], step.request))["site"]
        expected, planned = _quoted(step, quote)
        default, _ = _quoted(step, (await static.quotes([PLATFORM], step.request))["site"])
        actual = step.sample.seconds
        errors[step.kind].append(abs(expected - actual) / actual)
        defaults[step.kind].append(abs(default - actual) / actual)
        overruns[step.kind] += actual > planned
        estimate_basis = (
            quote.data[0] if step.kind == "stage" else getattr(quote, step.kind)
        ).basis
        bases[step.kind][estimate_basis] += 1
        await estimator.record([step.sample])
    return {"errors": errors, "defaults": defaults, "overruns": overruns, "bases": bases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000, help="steps in the history (3000)")
    parser.add_argument("--quick", action="store_true", help="600 steps")
    parser.add_argument("--seed", type=int, default=2026, help="random seed (2026)")
    parser.add_argument("--window", type=int, default=50, help="samples kept per key (50)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    steps = 600 if args.quick else args.steps
    settings = EstimateSettings(window=args.window, refresh=0)
    started = time.perf_counter()
    result = asyncio.run(replay(history(steps, args.seed), settings))
    elapsed = time.perf_counter() - started

    print(
        f"estimates: {steps} steps replayed in {elapsed:.1f} s "
        f"(seed {args.seed}, window {args.window})"
    )
    print(
        f"{'step':<8}{'count':>7}{'MdAPE est.':>12}{'MdAPE def.':>12}{'p90 APE est.':>14}"
        f"{'overran plan':>14}  basis"
    )
    every, every_default = [], []
    for kind in ("stage", "image", "launch"):
        errors, defaults = result["errors"][kind], result["defaults"][kind]
        every += errors
        every_default += defaults
        bases = ", ".join(f"{b} {n}" for b, n in sorted(result["bases"][kind].items()))
        print(
            f"{kind:<8}{len(errors):>7}{statistics.median(errors):>12.1%}"
            f"{statistics.median(defaults):>12.1%}"
            f"{statistics.quantiles(errors, n=10)[-1]:>14.1%}"
            f"{result['overruns'][kind] / len(errors):>14.1%}  {bases}"
        )
    mdape, mdape_default = statistics.median(every), statistics.median(every_default)
    print(f"{'all':<8}{len(every):>7}{mdape:>12.1%}{mdape_default:>12.1%}")
    verdict = "PASS" if mdape < TARGET else "FAIL"
    print(
        f"{verdict}: median absolute percentage error {mdape:.1%} with history "
        f"(target < {TARGET:.0%}); {mdape_default:.1%} with the static defaults"
    )


if __name__ == "__main__":
    main()
