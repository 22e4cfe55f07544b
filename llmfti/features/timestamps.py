"""Timestamps in feature groups: always microseconds, always UTC.

A value without a zone offset (an ISO string, a naive ``datetime``, a naive Arrow column) is
read as UTC. Epoch numbers are refused: seconds or milliseconds cannot be told apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_utc(value: object) -> datetime:
    """``value`` (ISO-8601 string or datetime) as an aware UTC datetime; ValueError otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp") from None
    else:
        raise ValueError(f"{value!r} ({type(value).__name__}) is not a timestamp; give an ISO-8601 string")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch (exact, no float rounding)."""
    delta = to_utc(moment) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def utc_now() -> datetime:
    """Now, truncated to microseconds (what a timestamp[us] column stores)."""
    return datetime.now(UTC)
