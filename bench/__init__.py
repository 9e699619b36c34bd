"""Benchmarks: they measure and print, and write JSON under bench/results; they never assert a time."""
