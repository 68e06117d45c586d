"""Benchmarks: `make bench` runs them and writes bench/RESULTS.md (medians and ratios from one run)."""
