"""Garbage-collector settings for long-running processes (broker and workers).

After start-up a process holds a few hundred thousand objects that live as
long as it does: modules, the schema's compiled types, settings, the route
table. CPython's cyclic collector walks them again on every full collection.
``settle`` collects once and then freezes them (``gc.freeze``), so later
collections walk only what was made since, and makes the youngest
generation larger, so short-lived request objects are mostly freed by
reference counting before a collection ever looks at them.
docs/PERFORMANCE.md has the effect on request latency.
"""

from __future__ import annotations

import gc

#: Allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what start-up made and collect young objects less often. Call once, when ready."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
