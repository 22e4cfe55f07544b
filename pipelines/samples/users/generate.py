"""Generate the example user dataset (events.jsonl, profiles.jsonl) next to this file.

Deterministic (a fixed seed and a fixed calendar): running it again rewrites byte-identical
files. The data is synthetic: 40 users of an imaginary documentation assistant over March 2026.
A few lines are deliberately bad (an unknown plan, an event without a timestamp, a line that
is not JSON) so the demo shows quarantine with reasons instead of silent drops.

    python pipelines/samples/users/generate.py [--users 40] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 31
LANGUAGES = ["en", "en", "en", "de", "fr", "es"]
PLANS = ["free", "free", "pro", "team"]
TOPICS = ["installation", "indexing", "search", "fine-tuning", "evaluation", "deployment", "api", "billing"]
EVENT_TYPES = ["question", "question", "search", "feedback", "code_run", "api_call"]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(users: int = 40, seed: int = 7) -> tuple[list[dict], list[dict], list[str]]:
    """Profiles, events, and extra raw lines (the deliberately malformed ones)."""
    rng = random.Random(seed)
    profiles: list[dict] = []
    events: list[dict] = []
    for n in range(1, users + 1):
        user = f"u{n:03d}"
        signup = START - timedelta(days=rng.randint(5, 200))
        plan = rng.choice(PLANS)
        profiles.append({"user_id": user, "language": rng.choice(LANGUAGES), "plan": plan, "updated_at": _iso(signup)})
        if plan == "free" and rng.random() < 0.3:  # an upgrade during the month
            upgrade = START + timedelta(days=rng.randint(3, 27), hours=rng.randint(0, 23))
            profiles.append({**profiles[-1], "plan": "pro", "updated_at": _iso(upgrade)})
        activity = rng.choice([0.3, 1, 2, 4, 8])  # mean events per day
        favourites = rng.sample(TOPICS, 3)
        for day in range(DAYS):
            for _ in range(_poisson(rng, activity)):
                moment = START + timedelta(days=day, seconds=rng.randint(0, 86_399))
                topic = rng.choice(favourites) if rng.random() < 0.75 else rng.choice(TOPICS)
                events.append(
                    {"user_id": user, "event_type": rng.choice(EVENT_TYPES), "topic": topic, "ts": _iso(moment)}
                )
    events.sort(key=lambda e: (e["ts"], e["user_id"]))
    profiles.append(
        {"user_id": "u002", "language": "en", "plan": "platinum", "updated_at": _iso(START + timedelta(days=10))}
    )
    bad_lines = [
        json.dumps({"user_id": "u003", "event_type": "question", "topic": "search"}),  # no ts
        "{this line is not json",
    ]
    return profiles, events, bad_lines


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def write(out: Path, users: int = 40, seed: int = 7) -> dict[str, int]:
    profiles, events, bad_lines = generate(users, seed)
    out.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(e, sort_keys=True) for e in events]
    lines[len(lines) // 2 : len(lines) // 2] = bad_lines  # bad lines in the middle of the file
    (out / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "profiles.jsonl").write_text(
        "\n".join(json.dumps(p, sort_keys=True) for p in profiles) + "\n", encoding="utf-8"
    )
    return {"users": users, "events": len(events), "profiles": len(profiles), "bad_lines": len(bad_lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    print(json.dumps(write(args.out, args.users, args.seed)))


if __name__ == "__main__":
    main()
