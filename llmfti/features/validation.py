"""Validation rules declared on a feature group, checked on every write.

Rules (each reason starts with the rule's name so quarantined rows can be grouped by it):
``type`` (a value that does not convert), ``not_null`` (always for key and event_time; for
features declared ``not_null``), ``range`` (``min``/``max``), ``allowed_values`` (``allowed``,
element-wise for list features) and ``unique_key_event_time`` (a (key, event_time) pair repeated
inside the write, or, on append, already in the table).

The policy decides what a violation does: ``strict`` rejects the whole write
(:class:`DataValidationError`), ``quarantine`` writes the good rows and stores every bad row with
its reasons in the group's quarantine table. Nothing is dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from llmfti.errors import DataValidationError
from llmfti.features.spec import NUMERIC_TYPES, FeatureGroupSpec

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

Policy = Literal["strict", "quarantine"]
POLICIES = ("strict", "quarantine")


def identity_keys(spec: FeatureGroupSpec, table: pa.Table) -> pa.Array:
    """One string per row identifying (key, event_time), for uniqueness checks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = table.column(spec.key).cast(pa.string())
    micros = table.column(spec.event_time).cast(pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(key, micros, "\x1f").combine_chunks()


def validate(
    spec: FeatureGroupSpec,
    table: pa.Table,
    row_errors: dict[int, list[str]] | None = None,
    existing_identities: pa.Array | None = None,
) -> dict[int, list[str]]:
    """Reasons per bad row index (rows absent from the result passed every rule)."""
    import pyarrow.compute as pc

    reasons: dict[int, list[str]] = {i: list(r) for i, r in (row_errors or {}).items()}

    def flag(mask: np.ndarray, reason_of) -> None:  # noqa: ANN001
        for index in mask.nonzero()[0].tolist():
            reasons.setdefault(index, []).append(reason_of(index))

    for column, required in [(spec.key, True), (spec.event_time, True)] + [(f.name, f.not_null) for f in spec.features]:
        if not required:
            continue
        mask = _np(pc.is_null(table.column(column)))
        # a cell that failed conversion is null now; its ``type`` reason already explains it
        failed = [i for i, r in reasons.items() if any(f"column {column!r}:" in x for x in r)]
        mask[failed] = False
        flag(mask, lambda _i, c=column: f"not_null: column {c!r} is null")

    for feature in spec.features:
        column = table.column(feature.name)
        if feature.type in NUMERIC_TYPES:
            if feature.min is not None:
                flag(
                    _np(pc.fill_null(pc.less(column, feature.min), False)),
                    lambda i, f=feature, c=column: f"range: {f.name!r} = {c[i].as_py()} is below min {f.min:g}",
                )
            if feature.max is not None:
                flag(
                    _np(pc.fill_null(pc.greater(column, feature.max), False)),
                    lambda i, f=feature, c=column: f"range: {f.name!r} = {c[i].as_py()} is above max {f.max:g}",
                )
        if feature.allowed is not None:
            flag(
                _not_allowed(column, feature.allowed),
                lambda i, f=feature, c=column: (
                    f"allowed_values: {f.name!r} = {c[i].as_py()!r} is not one of {f.allowed}"
                ),
            )

    if spec.unique_key_event_time and table.num_rows:
        _flag_duplicates(spec, table, existing_identities, reasons)
    return reasons


def _np(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    import numpy as np

    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool).copy()


def _not_allowed(column: pa.ChunkedArray, allowed: list) -> np.ndarray:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks()
    if pa.types.is_list(column.type):
        elements = pc.list_flatten(column)
        parents = pc.list_parent_indices(column).to_numpy()
        bad_elements = _np(pc.invert(pc.is_in(elements, value_set=pa.array(allowed, type=elements.type))))
        bad_elements &= ~_np(pc.is_null(elements))
        mask = np.zeros(len(column), dtype=bool)
        mask[parents[bad_elements]] = True
        return mask
    inside = pc.is_in(column, value_set=pa.array(allowed, type=column.type))
    return _np(pc.and_(pc.invert(inside), pc.is_valid(column)))


def _flag_duplicates(
    spec: FeatureGroupSpec, table: pa.Table, existing: pa.Array | None, reasons: dict[int, list[str]]
) -> None:
    import numpy as np
    import pyarrow.compute as pc

    identities = identity_keys(spec, table)
    valid = _np(pc.is_valid(identities))
    indices = pc.fill_null(pc.dictionary_encode(identities).indices, 0)
    codes = np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    counts = np.bincount(codes[valid], minlength=1)
    repeated = valid & (counts[codes] > 1)
    for index in repeated.nonzero()[0].tolist():
        reasons.setdefault(index, []).append(
            f"unique_key_event_time: ({table.column(spec.key)[index].as_py()!r}, "
            f"{table.column(spec.event_time)[index].as_py().isoformat()}) appears "
            f"{counts[codes[index]]} times in this write"
        )
    if existing is not None and len(existing):
        clash = _np(pc.fill_null(pc.is_in(identities, value_set=existing), False))
        for index in clash.nonzero()[0].tolist():
            reasons.setdefault(index, []).append(
                f"unique_key_event_time: ({table.column(spec.key)[index].as_py()!r}, "
                f"{table.column(spec.event_time)[index].as_py().isoformat()}) is already in the table; "
                "write with mode='upsert' to replace it"
            )


def enforce(spec: FeatureGroupSpec, reasons: dict[int, list[str]], policy: Policy, total: int) -> None:
    """Under ``strict``, raise :class:`DataValidationError` summarising the first violations."""
    if policy not in POLICIES:
        from llmfti.errors import InvalidInputError

        raise InvalidInputError(f"unknown ingest policy {policy!r}", expected=" or ".join(POLICIES))
    if policy == "strict" and reasons:
        sample = "; ".join(f"row {i}: {', '.join(r)}" for i, r in sorted(reasons.items())[:5])
        raise DataValidationError(
            f"{len(reasons)} of {total} rows written to feature group {spec.name} v{spec.version} "
            f"failed validation ({sample}); nothing was written",
            expected="every row to pass the group's rules",
            fix="correct the rows, or ingest with policy 'quarantine' to write the good rows and set the "
            "bad ones aside with their reasons",
        )
