"""Synthetic data generators used by the demo, the tests and the benchmarks."""
