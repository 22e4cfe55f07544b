"""Bring a write (an Arrow table or rows of dicts) to a feature group's declared input schema.

Column-level problems (a missing or undeclared column, an Arrow column of the wrong type) reject
the whole write with :class:`SchemaMismatchError` naming the column and the expected type.
Value-level problems in rows (``"age": "abc"`` in a JSONL file) are per-row reasons: the row's
cell becomes null and the reason travels to validation, where the group's policy decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmfti.errors import InvalidInputError, SchemaMismatchError
from llmfti.features.spec import INGESTED_AT, FeatureGroupSpec
from llmfti.features.timestamps import to_utc

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class Conformed:
    """The write in the declared schema, plus reasons for rows whose values could not be converted."""

    table: pa.Table
    row_errors: dict[int, list[str]] = field(default_factory=dict)
    source_rows: list[Mapping[str, Any]] | None = None

    def row_json(self, index: int) -> str:
        """The row as it was given (rows input) or as converted (table input), as JSON."""
        row = self.source_rows[index] if self.source_rows is not None else self.table.slice(index, 1).to_pylist()[0]
        return json.dumps(row, default=str, sort_keys=True)


def conform(spec: FeatureGroupSpec, data: Any) -> Conformed:
    """``data`` (pyarrow Table/RecordBatch or an iterable of dict rows) in ``spec.input_schema()``."""
    import pyarrow as pa

    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return Conformed(_conform_table(spec, data))
    if isinstance(data, Mapping) or isinstance(data, str | bytes) or not isinstance(data, Iterable):
        raise InvalidInputError(
            f"cannot write a {type(data).__name__} to feature group {spec.name}",
            expected="a pyarrow Table/RecordBatch or a list of dict rows",
            fix="wrap a single row in a list, or read the file with the CLI's `features ingest`",
        )
    return _conform_rows(spec, list(data))


def _expected(spec: FeatureGroupSpec) -> dict[str, pa.DataType]:
    return {f.name: f.type for f in spec.input_schema()}


def _check_columns(spec: FeatureGroupSpec, given: Iterable[str], present_somewhere: set[str]) -> None:
    expected = _expected(spec)
    for name in given:
        if name == INGESTED_AT:
            raise SchemaMismatchError(
                f"column '{INGESTED_AT}' given in a write to feature group {spec.name} v{spec.version}",
                expected=f"'{INGESTED_AT}' is set by llmfti at write time",
                fix=f"drop the '{INGESTED_AT}' column",
            )
        if name not in expected:
            raise SchemaMismatchError(
                f"column {name!r} is not declared in feature group {spec.name} v{spec.version}",
                expected=f"only the declared columns {list(expected)}",
                fix="drop or rename the column, or declare it in a new schema version of the group",
            )
    for name, dtype in expected.items():
        if name not in present_somewhere:
            raise SchemaMismatchError(
                f"column {name!r} is missing from the write to feature group {spec.name} v{spec.version}",
                expected=f"a column {name!r} of type {dtype}",
                fix=f"add {name!r} (null values are allowed unless the group declares it not_null)",
            )


def _castable(actual: pa.DataType, expected: pa.DataType) -> bool:
    import pyarrow.types as t

    if t.is_null(actual):
        return True
    if t.is_integer(expected):
        return t.is_integer(actual)
    if t.is_floating(expected):
        return t.is_floating(actual) or t.is_integer(actual)
    if t.is_string(expected):
        return t.is_string(actual) or t.is_large_string(actual) or t.is_string_view(actual)
    if t.is_timestamp(expected):
        return t.is_timestamp(actual)
    if t.is_list(expected):
        return (t.is_list(actual) or t.is_large_list(actual)) and _castable(actual.value_type, expected.value_type)
    return False


def _conform_table(spec: FeatureGroupSpec, table: pa.Table) -> pa.Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    _check_columns(spec, table.column_names, set(table.column_names))
    columns = []
    for name, dtype in _expected(spec).items():
        column = table.column(name)
        actual = column.type
        if actual != dtype:
            if not _castable(actual, dtype):
                raise SchemaMismatchError(
                    f"column {name!r} of feature group {spec.name} v{spec.version} has type {actual}",
                    expected=f"{name!r} of type {dtype}",
                    fix=f"cast {name!r} to {dtype} before writing (or write rows and let values convert)",
                )
            if pa.types.is_timestamp(actual) and actual.tz is None:
                column = pc.assume_timezone(column, "UTC")
            try:
                column = column.cast(dtype, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaMismatchError(
                    f"column {name!r} ({actual}) does not convert losslessly to {dtype}: {exc}",
                    expected=f"{name!r} of type {dtype}",
                    fix=f"cast {name!r} to {dtype} yourself, deciding how to round or truncate",
                ) from exc
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=spec.input_schema())


def _conform_rows(spec: FeatureGroupSpec, rows: list[Any]) -> Conformed:
    import pyarrow as pa

    present: set[str] = set()
    for position, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise InvalidInputError(
                f"row {position} of a write to feature group {spec.name} is a {type(row).__name__}",
                expected="every row a mapping of column name to value",
                fix="pass rows as dicts (JSON objects)",
            )
        present.update(row)
    if rows:
        _check_columns(spec, sorted(present), present)
    errors: dict[int, list[str]] = {}
    arrays = []
    for name, dtype in _expected(spec).items():
        values = [row.get(name) for row in rows]
        arrays.append(_convert_column(name, values, dtype, errors))
    table = pa.Table.from_arrays(arrays, schema=spec.input_schema()) if rows else spec.input_schema().empty_table()
    return Conformed(table, errors, rows)


def _convert_column(name: str, values: list[Any], dtype: pa.DataType, errors: dict[int, list[str]]) -> pa.Array:
    """Vectorised conversion; on failure, value by value so each bad cell gets its own reason."""
    import pyarrow as pa

    if pa.types.is_timestamp(dtype):
        converted = []
        for position, value in enumerate(values):
            if value is None:
                converted.append(None)
                continue
            try:
                converted.append(to_utc(value))
            except ValueError as exc:
                errors.setdefault(position, []).append(f"type: column {name!r}: {exc}")
                converted.append(None)
        return pa.array(converted, type=dtype)
    try:
        return _strict_array(values, dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        pass
    converted = []
    for position, value in enumerate(values):
        try:
            _strict_array([value], dtype)
            converted.append(value)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            errors.setdefault(position, []).append(f"type: column {name!r}: {value!r} is not {dtype}")
            converted.append(None)
    return _strict_array(converted, dtype)


def _strict_array(values: list[Any], dtype: pa.DataType) -> pa.Array:
    """``pa.array`` without the silent coercions JSON input should not get (bool->int, float->int)."""
    import pyarrow as pa

    if pa.types.is_integer(dtype) and any(isinstance(v, bool | float) for v in values):
        raise TypeError("integer column given a bool or float")
    if pa.types.is_floating(dtype) and any(isinstance(v, bool) for v in values):
        raise TypeError("float column given a bool")
    if pa.types.is_boolean(dtype) and any(v is not None and not isinstance(v, bool) for v in values):
        raise TypeError("bool column given a non-bool")
    if pa.types.is_string(dtype) and any(v is not None and not isinstance(v, str) for v in values):
        raise TypeError("string column given a non-string")
    return pa.array(values, type=dtype)
