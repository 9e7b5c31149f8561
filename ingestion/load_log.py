"""A load's life in raw.load_log: started (`loading`), then `committed` with its watermark, or `failed` with its
error; a load that never finished is `abandoned` by the next, whose start discards its rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from ingestion.load_plan import LoadPlan
from ingestion.warehouse import COMMITTED, landed_tables


@contextmanager
def transaction(con) -> Iterator[None]:
    """One explicit transaction on `con`, rolled back on any error."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def start_load(con, plan: LoadPlan, started: datetime) -> int:
    """Discard what earlier loads left uncommitted (a crash, a kill), then log this load as `loading`."""
    with transaction(con):
        discard_uncommitted(con)
        con.execute(
            "UPDATE raw.load_log SET status = 'abandoned', message = 'the process stopped before committing' "
            "WHERE status = 'loading' AND load_id <> ?",
            [plan.load_id],
        )
        load_seq = con.execute("SELECT nextval('raw.load_seq')").fetchall()[0][0]
        write_log(con, plan, load_seq, "loading", started, 0, None)
    return load_seq


def discard_uncommitted(con) -> None:
    """Rows of loads that never committed (a crash, a kill): invisible already, deleted here."""
    for table in landed_tables(con):
        con.execute(f"DELETE FROM {table} WHERE NOT ({COMMITTED})")


def write_log(
    con,
    plan: LoadPlan,
    load_seq: int | None,
    status: str,
    started: datetime,
    export_errors: int,
    message: str | None,
) -> None:
    """The load's row in raw.load_log (replacing an earlier failed attempt's)."""
    con.execute("DELETE FROM raw.load_log WHERE load_id = ?", [plan.load_id])
    con.execute(
        """INSERT INTO raw.load_log (load_id, load_seq, source, mode, landing, since, transaction_time,
               transaction_at, started_at, finished_at, status, files, export_errors, message, warnings, site_id)
           VALUES (?, ?, ?, ?, ?, ?, ?, try_cast(? AS TIMESTAMPTZ), ?, ?, ?, ?, ?, ?, ?, ?)""",
        [
            plan.load_id,
            load_seq,
            plan.source,
            plan.mode,
            str(plan.folder),
            plan.since,
            plan.transaction_time,
            plan.transaction_time,
            started,
            datetime.now(UTC),
            status,
            len(plan.files),
            export_errors,
            message,
            "; ".join(plan.warnings) or None,
            plan.site_id,
        ],
    )


def record_failure(con, plan: LoadPlan, load_seq: int | None, started: datetime, error: BaseException) -> None:
    """Log the load as failed and discard its rows; the original error matters more than one raised here."""
    try:
        con.execute("ROLLBACK")  # if a batch's transaction is still open
    except Exception:  # noqa: BLE001 - none was
        pass
    try:
        with transaction(con):
            write_log(con, plan, load_seq, "failed", started, 0, f"{type(error).__name__}: {error}"[:2000])
            discard_uncommitted(con)
    except Exception:  # noqa: BLE001 - the original error matters more; the next load discards the rows
        pass
