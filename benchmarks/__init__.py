"""Benchmark harness; recorded results live in benchmarks/results/."""
