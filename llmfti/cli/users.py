"""``llmfti users ...``: erase a user everywhere (right to be forgotten) and list past erasures."""

from __future__ import annotations

from typing import Any

import typer

from llmfti.cli.output import JsonOption, console, emit, reporting_errors

app = typer.Typer(help="Users: forget one (erase their rows, online values and old versions); list erasures.",
                  no_args_is_help=True)


@app.command("forget")
def forget(
    user_id: str = typer.Argument(..., help="The user id the agent logged (x-user-id)."),
    tenant: str = typer.Option(None, "--tenant", help="Erase only this tenant's rows where a table records tenants."),
    by: str = typer.Option(None, "--by", help="Who requests the erasure (default: the OS user)."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in the audit table, e.g. a ticket id)."),
    as_json: bool = JsonOption,
) -> None:
    """Remove the user's rows from every feature group, the online store, the inference log, feedback and
    instruction datasets, and remove old Lance versions that still hold them (see pipelines/forget_user.py)."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from pipelines.forget_user import forget_user

        record = forget_user(load_settings(), user_id, tenant=tenant, requested_by=by, reason=reason)
        emit(record.to_dict(), as_json, _human)


@app.command("erasures")
def erasures_cmd(as_json: bool = JsonOption) -> None:
    """The erasure audit table: who, when, what and counts (never the erased values)."""
    with reporting_errors(as_json):
        from llmfti.config import load_settings
        from llmfti.features.erasures import erasures

        emit({"erasures": erasures(load_settings())}, as_json)


def _human(record: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]{record['erasure_id']}[/] by {record['requested_by']} at {record['at']}", highlight=False)
    for table, counts in sorted(record["tables"].items()):
        out.print(f"  {table}: {counts['rows_deleted']} rows deleted, "
                  f"{counts['versions_removed']} old versions removed")
    out.print(f"  online keys deleted: {record['online_keys_deleted']}")
    if record["tags_removed"]:
        out.print(f"  tags removed (they pinned versions holding the user): {', '.join(record['tags_removed'])}")
    if record["datasets_unrecreatable"]:
        out.print(f"  training datasets marked not recreatable: {', '.join(record['datasets_unrecreatable'])}")
