"""Benchmark scripts (run them as files: see README.md); not part of the package."""
