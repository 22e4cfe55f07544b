"""Thin routers: parse, call a service, return; no logic of their own."""
