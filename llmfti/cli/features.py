"""``llmfti features ...``: feature groups (offline), the online store, and the user pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(
    help="Feature groups (LanceDB), the online store (Redis) and point-in-time data.", no_args_is_help=True
)
pipeline_app = typer.Typer(help="Run an example feature pipeline end to end.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

GroupOption = typer.Option(..., "--group", "-g", help="Feature group name.")
VersionOption = typer.Option(None, "--version", help="Schema version (default: the highest).")


def _settings():  # noqa: ANN202
    from llmfti.config import load_settings

    return load_settings()


def _group(name: str, version: int | None):  # noqa: ANN202
    from llmfti.features.feature_group import FeatureGroup

    return FeatureGroup.open(_settings(), name, version)


@app.command("create")
def create(
    spec_file: Path = typer.Argument(..., help="YAML/JSON spec: name, version, key, features..."),
    as_json: bool = JsonOption,
) -> None:
    """Create a feature group (or confirm an identical one exists)."""
    with reporting_errors(as_json):
        from llmfti.features.feature_group import FeatureGroup
        from llmfti.features.spec import load_spec_file

        group = FeatureGroup.create(_settings(), load_spec_file(str(spec_file)))
        emit(
            {
                "group": group.name,
                "version": group.version,
                "table": group.spec.table_name,
                "data_version": group.data_version,
            },
            as_json,
        )


@app.command("list")
def list_groups(as_json: bool = JsonOption) -> None:
    """List feature groups with their features and descriptions."""
    with reporting_errors(as_json):
        from llmfti.features.feature_group import FeatureGroup

        specs = FeatureGroup.list(_settings())
        emit({"groups": [s.model_dump(mode="json") for s in specs]}, as_json, _print_groups)


def _read_input(path: Path) -> tuple[Any, list[tuple[int, str, list[str]]]]:
    """Rows (or a table) from .jsonl/.json/.csv/.parquet, plus lines that are not JSON."""
    from llmfti.errors import InvalidInputError

    if not path.is_file():
        raise InvalidInputError(f"input file {path} does not exist", fix="pass an existing file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path), []
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path).to_pylist(), []
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise InvalidInputError(f"{path} holds a {type(data).__name__}", expected="a JSON array of row objects")
        return data, []
    if suffix not in (".jsonl", ".ndjson"):
        raise InvalidInputError(f"unsupported input {path.name}", expected=".jsonl, .json, .csv or .parquet")
    rows, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            bad.append((number, line, [f"input: {path.name} line {number} is not JSON: {exc.msg}"]))
    return rows, bad


@app.command("ingest")
def ingest(
    file: Path = typer.Argument(..., help="Rows to write: .jsonl, .json (array), .csv or .parquet."),
    group: str = GroupOption,
    version: int | None = VersionOption,
    policy: str | None = typer.Option(None, "--policy", help="strict | quarantine (default: setting)."),
    mode: str = typer.Option("append", "--mode", help="append | upsert (replace same key+event_time)."),
    as_json: bool = JsonOption,
) -> None:
    """Validate and write rows to a feature group; bad rows reject the write or are quarantined."""
    with reporting_errors(as_json):
        from llmfti.errors import DataValidationError

        settings = _settings()
        fg = _group(group, version)
        policy = policy or settings.features.default_policy
        rows, bad_lines = _read_input(file)
        if bad_lines and policy == "strict":
            raise DataValidationError(
                f"{len(bad_lines)} lines of {file} are not JSON (first: line {bad_lines[0][0]}); nothing was written",
                fix="correct those lines, or use --policy quarantine",
            )
        result = fg.write(rows, mode=mode, policy=policy, source=str(file)).to_dict()
        if bad_lines:
            fg.quarantine_records(bad_lines, source=str(file), write_id=result["write_id"])
            result["rows_quarantined"] += len(bad_lines)
            result["rows_received"] += len(bad_lines)
            result["violations"]["input"] = len(bad_lines)
        emit(result, as_json)


@app.command("materialize")
def materialize(
    group: str = GroupOption,
    version: int | None = VersionOption,
    full: bool = typer.Option(False, "--full", help="Rewrite every key, ignoring the watermark."),
    as_json: bool = JsonOption,
) -> None:
    """Write the latest row per key to the online store (only what changed since the last run)."""
    with reporting_errors(as_json):
        from llmfti.features.materialization import materialize as run

        emit(run(_settings(), group, version=version, full=full).to_dict(), as_json)


@app.command("get")
def get(
    group: str = GroupOption,
    key: str = typer.Option(..., "--key", "-k", help="Entity key."),
    as_json: bool = JsonOption,
) -> None:
    """Read one entity's online feature vector (defaults flagged missing if absent)."""
    with reporting_errors(as_json):
        from llmfti.features.online_store import OnlineStore

        emit(OnlineStore.from_settings(_settings()).get(group, key).to_dict(), as_json)


@app.command("history")
def history(
    group: str = GroupOption,
    key: str = typer.Option(..., "--key", "-k", help="Entity key."),
    version: int | None = VersionOption,
    data_version: int | None = typer.Option(None, "--data-version", help="Read as of this Lance version."),
    as_json: bool = JsonOption,
) -> None:
    """Every offline row of one entity, oldest event first."""
    with reporting_errors(as_json):
        fg = _group(group, version)
        if fg.spec.key_type == "int64":
            from llmfti.errors import InvalidInputError

            if not key.lstrip("-").isdigit():
                raise InvalidInputError(f"key {key!r} is not an integer", expected=f"an int64 {fg.spec.key}")
            key = int(key)  # type: ignore[assignment]
        rows = fg.history(key, data_version=data_version).to_pylist()
        emit(
            {
                "group": fg.name,
                "version": fg.version,
                "key": key,
                "data_version": data_version or fg.data_version,
                "rows": rows,
            },
            as_json,
        )


@app.command("versions")
def versions(group: str = GroupOption, version: int | None = VersionOption, as_json: bool = JsonOption) -> None:
    """List the group's Lance data versions (one per write)."""
    with reporting_errors(as_json):
        fg = _group(group, version)
        emit({"group": fg.name, "version": fg.version, "data_versions": fg.data_versions()}, as_json)


@app.command("quarantine")
def quarantine(
    group: str = GroupOption,
    version: int | None = VersionOption,
    limit: int = typer.Option(50, "--limit", min=1, help="Most recent rows to show."),
    as_json: bool = JsonOption,
) -> None:
    """Show rows set aside by quarantine writes, with their reasons."""
    with reporting_errors(as_json):
        fg = _group(group, version)
        rows = fg.quarantined().to_pylist()
        emit({"group": fg.name, "version": fg.version, "total": len(rows), "rows": rows[-limit:]}, as_json)


@pipeline_app.command("users")
def users_pipeline(
    events: Path | None = typer.Option(None, "--events", help="Events JSONL (default: the bundled sample)."),
    profiles: Path | None = typer.Option(None, "--profiles", help="Profiles JSONL (default: the bundled sample)."),
    policy: str = typer.Option("quarantine", "--policy", help="strict | quarantine."),
    online: bool = typer.Option(True, "--online/--no-online", help="Materialize to the online store."),
    as_json: bool = JsonOption,
) -> None:
    """Compute user features from events + profiles, write the user_profile group, materialize it."""
    with reporting_errors(as_json):
        from pipelines.user_features import run_user_features

        summary = run_user_features(
            _settings(), events=events, profiles=profiles, policy=policy, materialize_online=online
        )
        emit(summary, as_json)


def _print_groups(result: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    if not result["groups"]:
        out.print("no feature groups yet")
    for spec in result["groups"]:
        table = Table(title=f"{spec['name']} v{spec['version']} (key {spec['key']}, {spec['event_time']})")
        for column in ("feature", "type", "rules", "description"):
            table.add_column(column)
        for f in spec["features"]:
            rules = [
                r
                for r in (
                    "not_null" if f["not_null"] else "",
                    f"min {f['min']}" if f["min"] is not None else "",
                    f"max {f['max']}" if f["max"] is not None else "",
                    f"in {f['allowed']}" if f["allowed"] else "",
                )
                if r
            ]
            table.add_row(f["name"], f["type"], ", ".join(rules), f["description"])
        out.print(table)
