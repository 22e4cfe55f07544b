"""Feature groups on real LanceDB: definitions, schema checks, validation rules and policies, versions."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from llmfti.errors import DataValidationError, InvalidInputError, NotFoundError, SchemaMismatchError
from llmfti.features.feature_group import FeatureGroup
from llmfti.features.spec import Feature, FeatureGroupSpec

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def make_spec(**changes) -> FeatureGroupSpec:
    fields = dict(
        name="users",
        features=[
            Feature(name="age", type="int32", description="age in years", min=0, max=120),
            Feature(name="plan", type="string", description="plan", not_null=True, allowed=["free", "pro"]),
            Feature(name="topics", type="list<string>", description="topics", allowed=["a", "b", "c"]),
            Feature(name="score", type="float64", description="a score"),
        ],
    )
    fields.update(changes)
    return FeatureGroupSpec(**fields)


def row(user="u1", day=1, **values) -> dict:
    base = {
        "user_id": user,
        "event_time": f"2026-03-{day:02d}T00:00:00Z",
        "age": 30,
        "plan": "free",
        "topics": ["a"],
        "score": 0.5,
    }
    base.update(values)
    return base


@pytest.fixture
def group(settings) -> FeatureGroup:
    return FeatureGroup.create(settings, make_spec())


def test_create_reopen_by_name_and_list(settings, group) -> None:
    reopened = FeatureGroup.open(settings, "users")
    assert reopened.spec == group.spec
    assert reopened.spec.feature("age").description == "age in years"
    assert [s.name for s in FeatureGroup.list(settings)] == ["users"]
    assert FeatureGroup.create(settings, make_spec()).spec == group.spec  # identical: reopened


def test_changed_definition_needs_a_new_schema_version(settings, group) -> None:
    changed = make_spec(features=[Feature(name="age", type="int64", description="age")])
    with pytest.raises(SchemaMismatchError, match="new schema version"):
        FeatureGroup.create(settings, changed)
    v2 = FeatureGroup.create(settings, make_spec(version=2, features=changed.features))
    assert v2.spec.table_name == "fg_users_v2" != group.spec.table_name
    assert FeatureGroup.open(settings, "users").version == 2
    assert FeatureGroup.open(settings, "users", 1).spec == group.spec
    with pytest.raises(NotFoundError, match="no schema version 3"):
        FeatureGroup.open(settings, "users", 3)
    with pytest.raises(NotFoundError, match="does not exist"):
        FeatureGroup.open(settings, "nobody")


def test_every_write_is_a_data_version_and_ingested_at_is_ours(group) -> None:
    first = group.write([row(day=1)])
    second = group.write([row(day=2, age=31)])
    assert second.data_version == first.data_version + 1 == group.data_version
    assert group.count_rows(first.data_version) == 1 and group.count_rows() == 2
    stored = group.read().to_pylist()
    assert {r["ingested_at"] for r in stored} == {first.ingested_at, second.ingested_at}
    assert [v["version"] for v in group.data_versions()][-2:] == [first.data_version, second.data_version]


def test_upsert_replaces_same_key_and_event_time(group) -> None:
    group.write([row(day=1, age=30), row(user="u2", day=1)])
    result = group.write([row(day=1, age=40), row(day=2, age=41)], mode="upsert")
    assert result.rows_written == 2
    history = group.history("u1").to_pylist()
    assert [(r["event_time"].day, r["age"]) for r in history] == [(1, 40), (2, 41)]
    assert group.count_rows() == 3


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            pa.table(
                {
                    "user_id": ["u"],
                    "event_time": [T0],
                    "age": ["30"],
                    "plan": ["free"],
                    "topics": [["a"]],
                    "score": [1.0],
                }
            ),
            r"column 'age' .* has type string.*'age' of type int32",
        ),
        (
            pa.table({"user_id": ["u"], "event_time": [T0], "age": [30], "plan": ["free"], "topics": [["a"]]}),
            r"column 'score' is missing.*'score' of type double",
        ),
        (
            pa.table(
                {
                    "user_id": ["u"],
                    "event_time": [T0],
                    "age": [30],
                    "plan": ["free"],
                    "topics": [["a"]],
                    "score": [1.0],
                    "extra": [1],
                }
            ),
            r"column 'extra' is not declared",
        ),
        (
            pa.table(
                {
                    "user_id": ["u"],
                    "event_time": [T0],
                    "age": [30],
                    "plan": ["free"],
                    "topics": [["a"]],
                    "score": [1.0],
                    "ingested_at": [T0],
                }
            ),
            r"'ingested_at' is set by llmfti",
        ),
        (
            pa.table(
                {
                    "user_id": ["u"],
                    "event_time": [T0],
                    "age": [2**40],
                    "plan": ["free"],
                    "topics": [["a"]],
                    "score": [1.0],
                }
            ),
            r"column 'age' .* does not convert losslessly to int32",
        ),
    ],
    ids=["wrong-type", "missing", "undeclared", "ingested_at", "lossy"],
)
def test_schema_mismatch_names_column_and_expected_type(group, table, message) -> None:
    with pytest.raises(SchemaMismatchError, match=message):
        group.write(table)
    assert group.count_rows() == 0


def test_compatible_arrow_types_are_cast(group) -> None:
    table = pa.table(
        {
            "user_id": ["u"],
            "event_time": pa.array([datetime(2026, 3, 1)], pa.timestamp("ns")),  # naive = UTC
            "age": pa.array([30], pa.int64()),
            "plan": ["free"],
            "topics": [["a"]],
            "score": pa.array([1], pa.int8()),
        }
    )
    assert group.write(table).rows_written == 1
    assert group.read().column("event_time")[0].as_py() == T0


def test_rows_with_unknown_column_are_a_schema_mismatch(group) -> None:
    with pytest.raises(SchemaMismatchError, match="'agee' is not declared"):
        group.write([{**row(), "agee": 3}])


RULE_CASES = [
    ("not_null", row(plan=None), "not_null: column 'plan' is null"),
    ("not_null", row(user=None), "not_null: column 'user_id' is null"),
    ("not_null", row(event_time=None), "not_null: column 'event_time' is null"),
    ("range", row(age=121), "range: 'age' = 121 is above max 120"),
    ("range", row(age=-1), "range: 'age' = -1 is below min 0"),
    ("allowed_values", row(plan="gold"), "allowed_values: 'plan' = 'gold' is not one of ['free', 'pro']"),
    ("allowed_values", row(topics=["a", "z"]), "allowed_values: 'topics' = ['a', 'z'] is not one of"),
    ("type", row(age="thirty"), "type: column 'age': 'thirty' is not int32"),
    ("type", row(age=True), "type: column 'age': True is not int32"),
    ("type", row(event_time="yesterday"), "type: column 'event_time': 'yesterday' is not an ISO-8601"),
]


@pytest.mark.parametrize(("rule", "bad", "reason"), RULE_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(RULE_CASES)])
def test_each_rule_rejects_under_strict_and_quarantines_with_reason(group, rule, bad, reason) -> None:
    good = row(user="ok")
    with pytest.raises(DataValidationError, match="nothing was written"):
        group.write([good, bad], policy="strict")
    assert group.count_rows() == 0

    result = group.write([good, bad], policy="quarantine", source="test")
    assert (result.rows_received, result.rows_written, result.rows_quarantined) == (2, 1, 1)
    assert result.violations == {rule: 1}
    [quarantined] = group.quarantined(write_id=result.write_id).to_pylist()
    assert quarantined["row_index"] == 1 and quarantined["source"] == "test"
    assert any(r.startswith(reason) for r in quarantined["reasons"]), quarantined["reasons"]
    assert group.read().column("user_id").to_pylist() == ["ok"]


def test_uniqueness_within_a_write_and_against_the_table(group) -> None:
    result = group.write([row(age=1), row(age=2), row(user="u2")], policy="quarantine")
    assert (result.rows_written, result.rows_quarantined) == (1, 2)  # both copies set aside: no silent pick
    reasons = [r for q in group.quarantined().to_pylist() for r in q["reasons"]]
    assert all("appears 2 times in this write" in r for r in reasons)

    again = group.write([row(user="u2", age=50)], policy="quarantine")
    assert again.rows_quarantined == 1
    assert (
        "already in the table; write with mode='upsert'"
        in group.quarantined(write_id=again.write_id)["reasons"][0].as_py()[0]
    )
    assert group.write([row(user="u2", age=50)], mode="upsert").rows_written == 1
    assert group.history("u2").column("age").to_pylist() == [50]


def test_uniqueness_can_be_switched_off(settings) -> None:
    fg = FeatureGroup.create(settings, make_spec(name="events", unique_key_event_time=False))
    assert fg.write([row(age=1), row(age=2)]).rows_written == 2


def test_bad_spec_and_bad_input_are_clear(group) -> None:
    with pytest.raises(ValueError, match="min/max need a numeric type"):
        Feature(name="x", type="string", description="d", min=1)
    with pytest.raises(ValueError, match="feature name"):
        Feature(name="bad name", type="string", description="d")
    with pytest.raises(ValueError, match="repeated"):
        make_spec(features=[Feature(name="user_id", type="string", description="d")])
    with pytest.raises(InvalidInputError, match="list of dict rows"):
        group.write({"user_id": "u1"})
    with pytest.raises(InvalidInputError, match="unknown write mode"):
        group.write([row()], mode="replace")


def test_as_of_ingestion_and_data_version_reads(group) -> None:
    first = group.write([row(day=1)])
    group.write([row(day=2)])
    assert group.read(as_of=first.ingested_at).num_rows == 1
    assert group.read(data_version=first.data_version).num_rows == 1
    assert group.data_version_at(first.ingested_at) <= first.data_version
    with pytest.raises(NotFoundError):
        group.read(data_version=999)
