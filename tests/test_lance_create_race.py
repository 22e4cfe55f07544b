"""Racing creates of one LanceDB table never lose a row or fail a writer (llmfti.lance.open_or_create_table).

LanceDB's own ``create_table`` (and pylance's ``mode="create"``) retries a losing create as an overwrite
of the winner's table: rows another writer added vanish, or its concurrent merge fails with "incompatible
with concurrent transaction Overwrite" (seen in CI on the registry). These tests race real creates.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from llmfti.lance import PRIMARY_KEY_METADATA, insert_if_absent, open_or_create_table

SCHEMA = pa.schema([pa.field("k", pa.int64(), nullable=False, metadata=PRIMARY_KEY_METADATA),
                    pa.field("writer", pa.string())])


def _connect(folder: str):  # noqa: ANN202
    import lancedb

    return lancedb.connect(folder)


def _create_then_write(folder: str, name: str, writer: str, start: object) -> None:
    """One writer: wait for the start signal, create-or-open, then append its row (as the logs and the
    quarantine do) or claim its key (as the registry does)."""
    db = _connect(folder)
    start.wait()
    table = open_or_create_table(db, name, SCHEMA)
    row = {"k": int(writer.rsplit("-", 1)[1]), "writer": writer}
    if row["k"] % 2:
        assert insert_if_absent(table, ["k"], row, SCHEMA)
    else:
        table.add(pa.Table.from_pylist([row], schema=SCHEMA))


@pytest.mark.parametrize("rounds", [12])
def test_threads_racing_to_create_a_table_keep_every_row(tmp_path: Path, rounds: int) -> None:
    for r in range(rounds):
        folder, name = str(tmp_path / f"db{r}"), "t"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run(i: int, folder: str = folder, name: str = name, r: int = r, barrier: threading.Barrier = barrier,
                errors: list[BaseException] = errors) -> None:  # this round's values, bound (ruff B023)
            try:
                _create_then_write(folder, name, f"thread-{r}-{i}", barrier)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        rows = _connect(folder).open_table(name).to_arrow().column("writer").to_pylist()
        assert sorted(rows) == sorted(f"thread-{r}-{i}" for i in range(4))


def test_processes_racing_to_create_a_table_keep_every_row(tmp_path: Path) -> None:
    """Separate processes (no shared lock): a create retried as an overwrite must put back what it replaced."""
    ctx = multiprocessing.get_context("spawn")  # lance is not fork-safe
    for r in range(4):
        folder = str(tmp_path / f"db{r}")
        start = ctx.Event()
        procs = [ctx.Process(target=_create_then_write, args=(folder, "t", f"proc-{r}-{i}", start))
                 for i in range(3)]
        for p in procs:
            p.start()
        import time

        time.sleep(3.0)  # every process has imported lance and waits on the event
        start.set()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        rows = _connect(folder).open_table("t").to_arrow().column("writer").to_pylist()
        assert sorted(rows) == sorted(f"proc-{r}-{i}" for i in range(3))
