"""Benchmarks: async functions that measure and return numbers (the CLI prints them as JSON)."""
