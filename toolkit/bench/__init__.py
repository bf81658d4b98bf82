"""Speed and memory of every method against the floor of one forward and one backward (``python -m toolkit bench``)."""
from .run import BenchReport, BenchSettings, format_table, run_bench

__all__ = ["BenchReport", "BenchSettings", "format_table", "run_bench"]
