"""Lifecycle events: the envelope, the Bus protocol, Redis Streams and in-memory buses."""
