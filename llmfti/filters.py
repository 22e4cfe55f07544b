"""Structured search filters: (field, op, value) triples compiled to a safe where-clause.

Fields come from an allow-list of columns, operators from a fixed table, and values are
type-checked and written as escaped literals: user input never becomes SQL text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llmfti.errors import FilterError
from llmfti.lance import escape_literal

_OPS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_SYMBOLS = {"=": "eq", "==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}
ALL_OPS = sorted([*_OPS, "in", "not_in", "prefix"])


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any

    @classmethod
    def parse(cls, expression: str) -> Filter:
        """``title=Foo``, ``event_time>=2024-01-01``, ``doc_id in a,b``, ``doc_id prefix guide/``."""
        for word in ("not_in", "in", "prefix"):
            left, sep, right = expression.partition(f" {word} ")
            if sep:
                value = right.split(",") if word in ("in", "not_in") else right
                return cls(left.strip(), word, value)
        for symbol in ("!=", ">=", "<=", "==", "=", ">", "<"):
            left, sep, right = expression.partition(symbol)
            if sep:
                return cls(left.strip(), _SYMBOLS[symbol], right.strip())
        raise FilterError(
            f"cannot parse filter {expression!r}",
            expected="FIELD OP VALUE with OP one of = != < <= > >= or ' in ', ' not_in ', ' prefix '",
            fix="e.g. --filter 'title=Super Bowl 50' or --filter 'doc_id prefix docs/'",
        )


def where_clause(filters: Iterable[Filter], columns: dict[str, str]) -> str | None:
    """AND of all filters; ``columns`` maps each filterable column to 'string' or 'timestamp'."""
    parts = [_compile(f, columns) for f in filters]
    return " AND ".join(parts) if parts else None


def _compile(f: Filter, columns: dict[str, str]) -> str:
    kind = columns.get(f.field)
    if kind is None:
        raise FilterError(
            f"cannot filter on {f.field!r}",
            expected=f"one of {', '.join(sorted(columns))}",
            fix="filter on one of those columns",
        )
    if f.op in _OPS:
        return f"{f.field} {_OPS[f.op]} {_literal(f.value, kind, f.field)}"
    if f.op in ("in", "not_in"):
        values = f.value if isinstance(f.value, list | tuple) else [f.value]
        if not values:
            raise FilterError(f"'{f.op}' on {f.field!r} needs at least one value", fix="give a list of values")
        items = ", ".join(_literal(v, kind, f.field) for v in values)
        return f"{f.field} {'IN' if f.op == 'in' else 'NOT IN'} ({items})"
    if f.op == "prefix":
        if kind != "string" or not isinstance(f.value, str):
            raise FilterError(f"'prefix' needs a string column and value, got {f.field!r}={f.value!r}")
        pattern = f.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return f"{f.field} LIKE {escape_literal(pattern)} ESCAPE '\\'"
    raise FilterError(f"unknown operator {f.op!r}", expected=f"one of {', '.join(ALL_OPS)}")


def _literal(value: Any, kind: str, field: str) -> str:
    if kind == "string":
        if not isinstance(value, str | int):
            raise FilterError(f"{field} takes a string, got {type(value).__name__} {value!r}")
        return escape_literal(str(value))
    if kind == "timestamp":
        try:
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError:
            raise FilterError(
                f"{field} takes a timestamp, got {value!r}", expected="ISO 8601, e.g. 2024-05-01T00:00:00Z"
            ) from None
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return f"CAST({escape_literal(moment.strftime('%Y-%m-%dT%H:%M:%S.%f'))} AS TIMESTAMP)"
    raise FilterError(f"column {field!r} of kind {kind!r} is not filterable")
