"""The declaration of a feature group: its key, event time, typed features and validation rules.

A spec is plain data (pydantic, JSON-serialisable) so it can be stored beside the data it
describes (in the LanceDB table's schema metadata and in Redis for online readers) and loaded
from a YAML/JSON file by the CLI. Changing what a group holds means a new schema ``version``:
version 1 and 2 of a group are separate tables.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmfti.errors import InvalidInputError
from llmfti.naming import check_name

if TYPE_CHECKING:
    import pyarrow as pa

FeatureType = Literal[
    "string",
    "int32",
    "int64",
    "float32",
    "float64",
    "bool",
    "timestamp",
    "list<string>",
    "list<int64>",
    "list<float64>",
]
KeyType = Literal["string", "int64"]
NUMERIC_TYPES = ("int32", "int64", "float32", "float64")
INGESTED_AT = "ingested_at"
SPEC_METADATA_KEY = b"llmfti.feature_group"


def arrow_type(name: str) -> pa.DataType:
    """The pyarrow type of a declared feature type (timestamps are microseconds, UTC)."""
    import pyarrow as pa

    scalar = {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    if name.startswith("list<"):
        return pa.list_(scalar[name[5:-1]])
    return scalar[name]


class Feature(BaseModel):
    """One feature column and the rules every value must pass on ingest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Column name: a letter, then letters, digits, '_' or '-'.")
    type: FeatureType
    description: str = Field(min_length=1, description="What the value means (shown by the CLI).")
    default: Any = Field(None, description="Value an online read returns when the entity is missing.")
    not_null: bool = Field(False, description="Reject rows where this feature is null.")
    min: float | None = Field(None, description="Smallest allowed value (numeric features).")
    max: float | None = Field(None, description="Largest allowed value (numeric features).")
    allowed: list[str | int | float | bool] | None = Field(
        None, description="The only allowed values (scalar features; each element for list features)."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value, what="feature name")

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Feature:
        if (self.min is not None or self.max is not None) and self.type not in NUMERIC_TYPES:
            raise ValueError(f"feature {self.name!r}: min/max need a numeric type, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min {self.min} is above max {self.max}")
        if self.allowed is not None and self.type in ("timestamp", "bool"):
            raise ValueError(f"feature {self.name!r}: allowed values are not supported for {self.type}")
        return self


class FeatureGroupSpec(BaseModel):
    """A feature group: one table per (name, version), keyed by ``key`` and ``event_time``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int = Field(1, ge=1, le=9999, description="Schema version; a new version is a new table.")
    description: str = ""
    key: str = Field("user_id", description="Entity key column (the primary key with event_time).")
    key_type: KeyType = "string"
    event_time: str = Field("event_time", description="When the feature values became true.")
    features: list[Feature] = Field(min_length=1)
    unique_key_event_time: bool = Field(
        True, description="Reject a row whose (key, event_time) repeats in the write or, on append, the table."
    )
    online_ttl_s: int | None = Field(
        None,
        ge=1,
        description="Online values expire at event_time + online_ttl_s; training joins ignore feature rows "
        "older than this at the spine timestamp, so training and serving agree. None: never expire.",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value, what="feature group name")

    @field_validator("key", "event_time")
    @classmethod
    def _valid_column(cls, value: str) -> str:
        return check_name(value, what="column name")

    @model_validator(mode="after")
    def _distinct_columns(self) -> FeatureGroupSpec:
        names = [self.key, self.event_time, INGESTED_AT, *(f.name for f in self.features)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"column names must be distinct (and '{INGESTED_AT}' is reserved); repeated: {duplicates}")
        return self

    # -- derived names and schemas -------------------------------------------------------

    @property
    def table_name(self) -> str:
        return f"fg_{self.name}_v{self.version}"

    @property
    def quarantine_table_name(self) -> str:
        return f"fgq_{self.name}_v{self.version}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise InvalidInputError(
            f"feature group {self.name} v{self.version} has no feature {name!r}",
            expected=f"one of {self.feature_names}",
            fix="use a declared feature name (llmfti features list shows them)",
        )

    def input_schema(self) -> pa.Schema:
        """Columns a writer supplies: key, event_time and every feature (not ``ingested_at``)."""
        import pyarrow as pa

        fields = [
            pa.field(self.key, arrow_type(self.key_type), nullable=False),
            pa.field(self.event_time, arrow_type("timestamp"), nullable=False),
        ]
        fields += [pa.field(f.name, arrow_type(f.type)) for f in self.features]
        return pa.schema(fields)

    def table_schema(self) -> pa.Schema:
        """The stored schema: the input columns plus ``ingested_at``, with this spec as metadata."""
        import pyarrow as pa

        schema = self.input_schema().append(pa.field(INGESTED_AT, arrow_type("timestamp"), nullable=False))
        return schema.with_metadata({SPEC_METADATA_KEY: self.to_json().encode()})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureGroupSpec:
        return cls.model_validate_json(text)


def load_spec_file(path: str) -> FeatureGroupSpec:
    """A spec from a YAML or JSON file, with a clear error when it does not validate."""
    from pathlib import Path

    import yaml
    from pydantic import ValidationError

    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"feature group spec {file} does not exist", fix="pass an existing YAML/JSON file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        return FeatureGroupSpec.model_validate(data)
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{file} is not valid YAML/JSON: {exc}", fix="correct the syntax") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: {err['msg']}" for err in exc.errors())
        raise InvalidInputError(
            f"{file} is not a valid feature group spec: {problems}",
            expected="name, version, key, event_time, features: [{name, type, description, ...}]",
            fix="correct the fields named above",
        ) from exc
