"""Clients of the outside services back ends talk to: Skaha, SRCNet data management, Harbor.

Each module speaks one service's published HTTP API with aiohttp and nothing
else: no events, no sessions. The back ends in :mod:`talicada.workers.backends`
turn lifecycle events into calls of these clients. :mod:`._http` holds what
they share: bearer tokens read from a file, and requests retried with backoff.
"""
