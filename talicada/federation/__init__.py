"""Federation: a broker of brokers (docs/ARCHITECTURE.md §12).

A broker whose settings name remote brokers as platforms (``[[platforms]]``
tables with ``remote = "http://…"``) aggregates them: it fans each request out
to every site at once with a per-site timeout, skips sites whose cached
capabilities or cached negative answers say they cannot serve it, merges the
offers, and forwards every later call on an offer to the site that made it.

Modules: ``config`` (settings), ``faults`` (failures injected by header),
``capabilities`` (``GET /capabilities`` and what it rules out), ``site`` (the
HTTP client of one remote broker), ``cache`` (TTL caches), ``index`` (which
site owns which offer), ``documents`` (identity in each dialect),
``aggregator`` (fan-out, merge, forwarding), ``follow`` (the aggregator's view
of a remote session) and ``web`` (the thin aiohttp hooks).

This package imports nothing heavy at the top so that :mod:`talicada.settings`
can read its settings structs.
"""
