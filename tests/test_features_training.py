"""Point-in-time-correct training data: no leakage, late data, frozen datasets, the join itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from llmfti.errors import InvalidInputError, NotFoundError
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.point_in_time import as_of_indices
from llmfti.features.spec import Feature, FeatureGroupSpec
from llmfti.features.training_data import TrainingDataset, get_training_data, rows_digest

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: int, hours: int = 0) -> datetime:
    return T0 + timedelta(days=n, hours=hours)


@pytest.fixture
def clicks(settings) -> FeatureGroup:
    spec = FeatureGroupSpec(
        name="clicks",
        features=[
            Feature(name="n", type="int64", description="clicks so far"),
            Feature(name="tier", type="string", description="tier"),
        ],
    )
    fg = FeatureGroup.create(settings, spec)
    fg.write(
        [
            {"user_id": "a", "event_time": day(1), "n": 1, "tier": "low"},
            {"user_id": "a", "event_time": day(3), "n": 3, "tier": "mid"},
            {"user_id": "a", "event_time": day(5), "n": 5, "tier": "high"},
            {"user_id": "b", "event_time": day(2), "n": 20, "tier": "low"},
        ]
    )
    return fg


SPINE = [
    {"user_id": "a", "ts": day(0), "label": 0},  # before any feature: nulls
    {"user_id": "a", "ts": day(3), "label": 1},  # exactly at an event time: included (<=)
    {"user_id": "a", "ts": day(4, 23), "label": 0},
    {"user_id": "b", "ts": day(9), "label": 1},
    {"user_id": "zed", "ts": day(9), "label": 1},  # unknown entity: nulls
    {"user_id": "a", "ts": day(2), "label": 1},  # spine order is kept
]


def test_point_in_time_join_never_leaks_the_future(settings, clicks) -> None:
    rows = get_training_data(settings, SPINE, ["clicks"])
    assert rows.column_names == ["user_id", "ts", "label", "clicks__n", "clicks__tier", "clicks__event_time"]
    assert rows.column("clicks__n").to_pylist() == [None, 3, 3, 20, None, 1]
    for ts, event_time in zip(
        rows.column("ts").to_pylist(), rows.column("clicks__event_time").to_pylist(), strict=True
    ):
        assert event_time is None or event_time <= ts


def test_a_feature_written_after_ts_never_appears(settings, clicks) -> None:
    spine = [{"user_id": "a", "ts": day(5) - timedelta(microseconds=1)}]
    before = get_training_data(settings, spine, ["clicks"])
    clicks.write(
        [{"user_id": "a", "event_time": day(5) - timedelta(microseconds=0), "n": 999, "tier": "x"}], mode="upsert"
    )
    after = get_training_data(settings, spine, ["clicks"])
    assert before.column("clicks__n").to_pylist() == after.column("clicks__n").to_pylist() == [3]


def test_late_data_changes_ad_hoc_reads_but_not_a_frozen_dataset(settings, clicks) -> None:
    dataset = TrainingDataset.create(settings, "clicks_train", SPINE, ["clicks"])
    original = dataset.read()
    assert dataset.spec.num_rows == 6 and dataset.spec.rows_sha256 == rows_digest(original)

    # late-arriving data: old event times, ingested now; plus a correction of an existing row
    clicks.write(
        [
            {"user_id": "a", "event_time": day(-1), "n": -1, "tier": "early"},
            {"user_id": "zed", "event_time": day(8), "n": 7, "tier": "low"},
        ]
    )
    clicks.write([{"user_id": "a", "event_time": day(3), "n": 33, "tier": "mid"}], mode="upsert")

    latest = get_training_data(settings, SPINE, ["clicks"])
    assert latest.column("clicks__n").to_pylist() == [-1, 33, 33, 20, 7, 1]  # the late data is real

    again = TrainingDataset.load(settings, "clicks_train").read()
    assert again.equals(original)
    assert rows_digest(again) == rows_digest(original)  # byte-identical Arrow IPC
    assert TrainingDataset.names(settings) == ["clicks_train"]


def test_as_of_ingestion_time_excludes_later_writes(settings, clicks) -> None:
    cutoff = clicks.data_versions()[-1]["committed_at"]  # the group as it was at this moment
    clicks.write([{"user_id": "b", "event_time": day(4), "n": 40, "tier": "mid"}])
    spine = [{"user_id": "b", "ts": day(9)}]
    assert get_training_data(settings, spine, ["clicks"]).column("clicks__n").to_pylist() == [40]
    assert get_training_data(settings, spine, ["clicks"], as_of=cutoff).column("clicks__n").to_pylist() == [20]


def test_ties_in_event_time_go_to_the_later_ingestion(settings) -> None:
    spec = FeatureGroupSpec(
        name="dups", unique_key_event_time=False, features=[Feature(name="v", type="int64", description="v")]
    )
    fg = FeatureGroup.create(settings, spec)
    fg.write([{"user_id": "a", "event_time": day(1), "v": 1}])
    fg.write([{"user_id": "a", "event_time": day(1), "v": 2}])
    rows = get_training_data(settings, [{"user_id": "a", "ts": day(2)}], ["dups"])
    assert rows.column("dups__v").to_pylist() == [2]


def test_ttl_is_a_join_rule_so_training_matches_serving(settings) -> None:
    spec = FeatureGroupSpec(
        name="fresh", online_ttl_s=3600, features=[Feature(name="v", type="int64", description="v")]
    )
    FeatureGroup.create(settings, spec).write([{"user_id": "a", "event_time": day(1), "v": 1}])
    spine = [{"user_id": "a", "ts": day(1, 1)}, {"user_id": "a", "ts": day(1, 2)}]
    assert get_training_data(settings, spine, ["fresh"]).column("fresh__v").to_pylist() == [1, None]


def test_features_filters_keys_and_errors(settings, clicks) -> None:
    spine = pa.table({"uid": ["a", "b", "a"], "when": ["2026-03-09T00:00:00Z"] * 3, "y": [1, 0, 1]})
    rows = get_training_data(
        settings,
        spine,
        ["clicks"],
        ts_column="when",
        key_column="uid",
        features={"clicks": ["tier"]},
        filters=[{"column": "clicks__tier", "op": "in", "value": ["high"]}],
    )
    assert rows.column_names == ["uid", "when", "y", "clicks__tier", "clicks__event_time"]
    assert rows.num_rows == 2 and rows.column("uid").to_pylist() == ["a", "a"]
    with pytest.raises(InvalidInputError, match="no column 'ts'"):
        get_training_data(settings, [{"user_id": "a", "when": day(1)}], ["clicks"])
    with pytest.raises(InvalidInputError, match="no feature 'nope'"):
        get_training_data(settings, SPINE, ["clicks"], features={"clicks": ["nope"]})
    with pytest.raises(NotFoundError):
        TrainingDataset.load(settings, "missing")
    TrainingDataset.create(settings, "once", SPINE, ["clicks"])
    with pytest.raises(InvalidInputError, match="already exists"):
        TrainingDataset.create(settings, "once", SPINE, ["clicks"])


def _brute_force(spine_keys, spine_ts, keys, event, ingested, max_age=None) -> list[int]:
    result = []
    for key, ts in zip(spine_keys, spine_ts, strict=True):
        best = -1
        for i in range(len(keys)):
            if keys[i] != key or event[i] > ts or (max_age is not None and ts - event[i] > max_age):
                continue
            if best < 0 or (event[i], ingested[i]) >= (event[best], ingested[best]):
                best = i
        result.append(best)
    return result


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_join_matches_a_brute_force_reference(seed) -> None:
    rng = np.random.default_rng(seed)
    n_features, n_spine = 300, 200
    keys = [f"k{v}" for v in rng.integers(0, 20, n_features)]
    event = rng.integers(0, 50, n_features).astype(np.int64)
    ingested = rng.permutation(n_features).astype(np.int64)  # distinct: a unique answer
    spine_keys = [None if v == 22 else f"k{v}" for v in rng.integers(0, 23, n_spine)]
    spine_ts = rng.integers(-5, 55, n_spine).astype(np.int64)
    for max_age in (None, 7):
        got = as_of_indices(
            pa.array(spine_keys, pa.string()), spine_ts, pa.array(keys), event, ingested, max_age_us=max_age
        )
        assert got.tolist() == _brute_force(spine_keys, spine_ts, keys, event, ingested, max_age)
