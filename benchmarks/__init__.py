"""Benchmarks: run as modules from the repository root, e.g. ``python -m benchmarks.index_throughput``.

Each prints a table and writes ``benchmarks/results/<name>.json`` (gitignored). Speed is measured
here, never asserted in tests.
"""
