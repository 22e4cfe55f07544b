"""How feature values are stored in a Redis hash and typed again on the way back.

One hash field per feature, values as readable strings (``redis-cli HGETALL`` shows them):
integers and floats as their decimal text (floats round-trip exactly via ``repr``), bools as
``1``/``0``, timestamps as microseconds since the epoch (UTC), lists as JSON, strings as UTF-8.
A null value is an absent field. Two reserved fields carry the row's ``_event_time`` and
``_ingested_at`` (microseconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmfti.features.timestamps import from_micros

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_TIME_FIELD = "_event_time"
INGESTED_AT_FIELD = "_ingested_at"


def _decode_bool(raw: bytes) -> bool:
    return raw == b"1"


def _decode_str(raw: bytes) -> str:
    return raw.decode("utf-8")


def _decode_timestamp(raw: bytes) -> Any:
    return from_micros(int(raw))


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "string": _decode_str,
    "int32": int,
    "int64": int,
    "float32": float,
    "float64": float,
    "bool": _decode_bool,
    "timestamp": _decode_timestamp,
    "list<string>": json.loads,
    "list<int64>": json.loads,
    "list<float64>": json.loads,
}


def encode_column(column: pa.ChunkedArray | pa.Array, type_name: str) -> list[Any]:
    """A column as values redis-py writes as-is (None for null); vectorised where Arrow can."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if type_name == "timestamp":
        return column.cast(pa.int64()).to_pylist()
    if type_name == "bool":
        return pc.if_else(column, 1, 0).to_pylist()
    if type_name.startswith("list<"):
        return [None if v is None else json.dumps(v, separators=(",", ":")) for v in column.to_pylist()]
    if type_name.startswith("float"):
        return [None if v is None else repr(v) for v in column.cast(pa.float64()).to_pylist()]
    return column.to_pylist()
