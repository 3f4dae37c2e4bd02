"""Talicada: an event-driven execution broker for astronomy science platforms."""

__version__ = "0.1.0"
