"""Eval suites that gate CI: run the agent's pipeline on golden sets, score, record, compare, gate."""
