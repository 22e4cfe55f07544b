"""Names that become table names or paths: checked once, so they can never inject or escape."""

from __future__ import annotations

import re

from llmfti.errors import InvalidInputError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


def check_name(value: str, *, what: str) -> str:
    """Return ``value`` if it is a safe identifier, else raise a clear error."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInputError(
            f"{what} {value!r} is not allowed",
            expected="1-64 characters: a letter, then letters, digits, '_' or '-'",
            fix=f"choose a {what} such as 'docs' or 'squad_dev'",
        )
    return value
