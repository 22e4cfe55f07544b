"""The example user feature pipeline: events + profiles -> the ``user_profile`` feature group.

Input: a user events file (JSONL: ``user_id, event_type, topic, ts``) and a profile file (JSONL:
``user_id, language, plan, updated_at``; a user may have several rows over time). Output: one
feature row per user and daily snapshot (midnight UTC after each day with data), computed only
from what was known at that snapshot (profile rows with ``updated_at <= snapshot``, events with
``ts < snapshot``), so the group's history is point-in-time correct by construction:

preferred language, plan, expertise level (from activity), top topics over 7 and 30 days, events
in the last 24 h / 7 d / 30 d, last active time. Rows are upserted on (user_id, event_time) so a
re-run replaces its own output; input lines that cannot be parsed are quarantined with a reason.

    from pipelines.user_features import run_user_features
    run_user_features(settings, events="events.jsonl", profiles="profiles.jsonl")
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from llmfti.config import Settings
from llmfti.errors import InvalidInputError
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.spec import Feature, FeatureGroupSpec
from llmfti.features.timestamps import to_utc

SAMPLES = Path(__file__).resolve().parent / "samples" / "users"
DAY = timedelta(days=1)
TOP_N = 3

USER_PROFILE = FeatureGroupSpec(
    name="user_profile",
    version=1,
    description="Per-user profile and activity features, daily snapshots from events and profiles.",
    key="user_id",
    event_time="event_time",
    features=[
        Feature(
            name="language",
            type="string",
            description="Preferred answer language (ISO 639-1)",
            default="en",
            allowed=["en", "de", "fr", "es", "it", "pt"],
        ),
        Feature(
            name="plan",
            type="string",
            description="Subscription plan",
            default="free",
            not_null=True,
            allowed=["free", "pro", "team"],
        ),
        Feature(
            name="expertise_level",
            type="string",
            description="beginner / intermediate / expert, from the last 30 days of activity",
            default="beginner",
            allowed=["beginner", "intermediate", "expert"],
        ),
        Feature(name="top_topics_7d", type="list<string>", description="Most frequent topics, last 7 days", default=[]),
        Feature(
            name="top_topics_30d", type="list<string>", description="Most frequent topics, last 30 days", default=[]
        ),
        Feature(name="events_24h", type="int64", description="Events in the last 24 hours", default=0, min=0),
        Feature(name="events_7d", type="int64", description="Events in the last 7 days", default=0, min=0),
        Feature(name="events_30d", type="int64", description="Events in the last 30 days", default=0, min=0),
        Feature(name="last_active", type="timestamp", description="Time of the latest event before the snapshot"),
    ],
)
ADVANCED_EVENTS = {"code_run", "api_call"}


def read_jsonl(path: Path, required: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[tuple[int, str, list[str]]]]:
    """Good records, and ``(line_number, raw_line, reasons)`` for lines that cannot be used."""
    if not path.is_file():
        raise InvalidInputError(f"input file {path} does not exist", fix="pass an existing JSONL file")
    good, bad = [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append((number, line.rstrip("\n"), [f"input: {path.name} line {number} is not JSON: {exc.msg}"]))
                continue
            problems = [
                f"input: {path.name} line {number} has no {f!r}" for f in required if record.get(f) in (None, "")
            ]
            for field in ("ts", "updated_at"):
                if field in required and field in record and record.get(field) is not None:
                    try:
                        record[field] = to_utc(record[field])
                    except ValueError as exc:
                        problems.append(f"input: {path.name} line {number}: {field} {exc}")
            if problems:
                bad.append((number, line.rstrip("\n"), problems))
            else:
                good.append(record)
    return good, bad


def compute_user_features(events: list[dict[str, Any]], profiles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feature rows (one per user and daily snapshot), each using only data known at its event_time."""
    if not events and not profiles:
        return []
    by_user_events: dict[str, list[dict[str, Any]]] = {}
    for event in sorted(events, key=lambda e: e["ts"]):
        by_user_events.setdefault(event["user_id"], []).append(event)
    by_user_profiles: dict[str, list[dict[str, Any]]] = {}
    for profile in sorted(profiles, key=lambda p: p["updated_at"]):
        by_user_profiles.setdefault(profile["user_id"], []).append(profile)

    # snapshots span the event period (profiles alone change rarely; they are carried into it)
    times = [e["ts"] for e in events] or [p["updated_at"] for p in profiles]
    first = _midnight(min(times)) + DAY
    last = _midnight(max(times)) + DAY
    rows = []
    for user in sorted(set(by_user_events) | set(by_user_profiles)):
        user_events = by_user_events.get(user, [])
        user_profiles = by_user_profiles.get(user, [])
        snapshot = first
        while snapshot <= last:
            row = _snapshot(user, snapshot, user_events, user_profiles)
            if row is not None:
                rows.append(row)
            snapshot += DAY
    return rows


def _snapshot(user: str, at: datetime, events: list[dict[str, Any]], profiles: list[dict[str, Any]]) -> dict | None:
    known = [p for p in profiles if p["updated_at"] <= at]
    past = [e for e in events if e["ts"] < at]
    if not known and not past:
        return None
    profile = known[-1] if known else {}

    def window(days: int) -> list[dict[str, Any]]:
        return [e for e in past if e["ts"] >= at - timedelta(days=days)]

    last_30, last_7 = window(30), window(7)
    advanced = sum(1 for e in last_30 if e.get("event_type") in ADVANCED_EVENTS)
    if len(last_30) >= 60 or advanced >= 25:
        level = "expert"
    elif len(last_30) >= 15:
        level = "intermediate"
    else:
        level = "beginner"
    return {
        "user_id": user,
        "event_time": at,
        "language": profile.get("language"),
        "plan": profile.get("plan"),
        "expertise_level": level,
        "top_topics_7d": _top(last_7),
        "top_topics_30d": _top(last_30),
        "events_24h": len(window(1)),
        "events_7d": len(last_7),
        "events_30d": len(last_30),
        "last_active": past[-1]["ts"] if past else None,
    }


def _top(events: list[dict[str, Any]]) -> list[str]:
    counts = Counter(e["topic"] for e in events if e.get("topic"))
    return [topic for topic, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]]


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def run_user_features(
    settings: Settings,
    *,
    events: str | Path | None = None,
    profiles: str | Path | None = None,
    policy: str = "quarantine",
    materialize_online: bool = True,
) -> dict[str, Any]:
    """Read inputs, compute features, upsert them into ``user_profile`` and materialize online."""
    events_path = Path(events) if events else SAMPLES / "events.jsonl"
    profiles_path = Path(profiles) if profiles else SAMPLES / "profiles.jsonl"
    group = FeatureGroup.create(settings, USER_PROFILE)

    good_events, bad_events = read_jsonl(events_path, ("user_id", "ts"))
    good_profiles, bad_profiles = read_jsonl(profiles_path, ("user_id", "updated_at"))
    group.quarantine_records(bad_events, source=str(events_path))
    group.quarantine_records(bad_profiles, source=str(profiles_path))

    rows = compute_user_features(good_events, good_profiles)
    written = group.write(rows, mode="upsert", policy=policy, source=f"{events_path.name}+{profiles_path.name}")
    summary: dict[str, Any] = {
        "group": group.name,
        "version": group.version,
        "events_read": len(good_events),
        "profiles_read": len(good_profiles),
        "input_lines_quarantined": len(bad_events) + len(bad_profiles),
        "feature_rows": len(rows),
        "write": written.to_dict(),
    }
    if materialize_online:
        from llmfti.features.materialization import materialize

        summary["materialize"] = materialize(settings, group).to_dict()
    return summary
