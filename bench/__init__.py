"""Benchmarks: `python -m bench.run` (make bench). See bench/README.md for how to add one."""

from bench.context import BenchContext, Blob, blob_bytes
from bench.measure import best_of, check_line, info_line, median_of, ratio_line

__all__ = ["BenchContext", "Blob", "best_of", "blob_bytes", "check_line", "info_line", "median_of", "ratio_line"]
