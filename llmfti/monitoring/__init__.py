"""Monitoring: drift statistics, the ``monitoring`` feature group's definition, alerts and the dashboard.

The pipeline that fills the group is ``pipelines/monitor.py`` (``llmfti monitor``); everything here is
plain computation over arrays and rows, shared by that pipeline, the agent's ``/metrics`` gauges and
its ``/dashboard`` page.
"""
