"""Chaos scenarios: every reliability promise tested by injecting the fault into real processes.

``python -m benchmarks.chaos [--full] [--only NAME ...]`` runs the scenarios, prints the table and
writes ``benchmarks/results/chaos.json``; ``tests/reliability`` runs the short forms.
"""
