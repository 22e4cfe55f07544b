"""The OpenAI-compatible HTTP layer: protocol (pydantic), services (no routing), thin routers."""
