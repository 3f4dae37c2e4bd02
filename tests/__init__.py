"""Talicada test suite."""
