"""Benchmarks: timing goals measured here, printed as JSON, never asserted in tests."""
