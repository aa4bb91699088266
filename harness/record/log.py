"""The shared record log: one leaderboard for workers on several machines.

Workers on one machine share a DuckDB file: its lock serialises their writes (see
:mod:`harness.record.db`). Workers on several machines cannot share a file, but they already
share the study's PostgreSQL server. So each record (the payload a spool keeps: every row of one
trial write) is appended to ``harness_records`` there, and every machine's DuckDB file is
materialised from that log, in log order, idempotently, up to a watermark kept in the file's
``meta`` table. Readers sync before they read.

Why a log of payloads and not the leaderboard's tables in PostgreSQL: an append is one INSERT in
one short transaction, which concurrent writers cannot break (no read-modify-write, no
half-written trial), and the DuckDB file stays the one format every reader uses (the report,
``harness compare``, a user's notebook). Replaying a payload deletes and rewrites the trial's
rows by id, so applying a record twice, or a record that another sync already applied, changes
nothing.

Why the advisory lock: a ``BIGSERIAL`` number is taken when a transaction inserts, not when it
commits, so two concurrent appends could become visible out of order and a reader's watermark
could skip the earlier one forever. Appends therefore take a transaction-level advisory lock
before they take their number: numbers become visible in order, and a reader that has seen
record N has seen every record before it. Appends are one per trial (minutes apart), so the lock
costs nothing measurable.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from harness.errors import HarnessError, StoreUnavailable

# pg_advisory_xact_lock keys (any 64-bit numbers no other tool of the database uses).
_APPEND_LOCK = 0x6861726E_6C6F67  # "harnlog": one append at a time
_MIGRATE_LOCK = 0x6861726E_6D6967  # "harnmig": one migration at a time

# Versioned migrations of the log's schema, applied once each, in order, under a lock (workers
# started together race to create tables otherwise).
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """CREATE TABLE harness_records (
               seq BIGSERIAL PRIMARY KEY,
               record_id TEXT NOT NULL UNIQUE,   -- a retried append is a no-op
               trial_id TEXT NOT NULL,
               written_at TIMESTAMPTZ NOT NULL DEFAULT now(),
               payload TEXT NOT NULL             -- JSON; TEXT keeps floats and NaN exactly as written
           )""",
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
BATCH = 100  # records read per query while syncing: a record can hold ~30k sample rows


def is_log_url(url: str | None) -> bool:
    """Whether a ``--storage`` value names a PostgreSQL server that can hold the record log."""
    return bool(url) and str(url).split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


class RecordLog:
    """The append-only log of leaderboard records in one PostgreSQL database."""

    def __init__(self, url: str):
        self.url = url
        self._engine: Any = None
        self._log_id: str | None = None

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001  (a malformed URL is reported when it is opened)
            return self.url.split("@")[-1]

    def _get_engine(self) -> Any:
        import sqlalchemy

        if self._engine is None:
            url = self.url.replace("postgres://", "postgresql://", 1)
            try:
                self._engine = sqlalchemy.create_engine(url, pool_pre_ping=True, pool_size=1)
            except Exception as err:  # noqa: BLE001  (bad URL, missing driver)
                raise HarnessError(
                    f"--storage {self.where} cannot hold the leaderboard log: {str(err).splitlines()[0][:200]}",
                    "pass postgresql://user@host/db",
                ) from None
        return self._engine

    def _run(self, work: Any) -> Any:
        """Run ``work(connection)`` in one transaction on a migrated schema; a server fault
        (unreachable, restarting, out of disk) is StoreUnavailable."""
        import sqlalchemy

        engine = self._get_engine()
        try:
            with engine.begin() as con:
                log_id = self._log_id or self._migrate(con)
                out = work(con)
        except sqlalchemy.exc.SQLAlchemyError as err:
            first = str(getattr(err, "orig", None) or err).splitlines()[0][:200]
            raise StoreUnavailable(f"leaderboard log {self.where}: {first}") from None
        self._log_id = log_id  # only once the migration is committed
        return out

    @staticmethod
    def _migrate(con: Any) -> str:
        """Apply the migrations this database has not had; returns the log's id."""
        from sqlalchemy import text

        con.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
        con.execute(
            text("CREATE TABLE IF NOT EXISTS harness_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        )
        meta = dict(con.execute(text("SELECT key, value FROM harness_meta")).fetchall())
        current = int(meta.get("schema_version", 0))
        if current > SCHEMA_VERSION:
            raise HarnessError(
                f"the leaderboard log's schema is version {current}, newer than this harness's {SCHEMA_VERSION}",
                "upgrade merge-harness on this machine",
            )
        for version, sql in MIGRATIONS:
            if version > current:
                con.execute(text(sql))
        log_id = meta.get("log_id") or uuid.uuid4().hex
        for key, value in (("schema_version", str(SCHEMA_VERSION)), ("log_id", log_id)):
            con.execute(
                text(
                    "INSERT INTO harness_meta VALUES (:k, :v) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ),
                {"k": key, "v": value},
            )
        return log_id

    @property
    def log_id(self) -> str:
        """A random id made when the log was created: which log a DuckDB file was made from."""
        if self._log_id is None:
            self._run(lambda con: None)
        assert self._log_id is not None
        return self._log_id

    def append(self, payload: dict[str, Any]) -> None:
        """Append one record durably (committed when this returns); a retried record is a no-op."""
        from sqlalchemy import text

        def work(con: Any) -> None:
            con.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK})
            con.execute(
                text(
                    """INSERT INTO harness_records (record_id, trial_id, payload) VALUES (:r, :t, :p)
                       ON CONFLICT (record_id) DO NOTHING"""
                ),
                {
                    "r": payload["record_id"],
                    "t": payload["trial"]["id"],
                    "p": json.dumps(payload, default=str),
                },
            )

        self._run(work)

    def since(self, seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Records after ``seq``, in log order, read in batches."""
        from sqlalchemy import text

        while True:
            rows = self._run(
                lambda con, after=seq: con.execute(
                    text("SELECT seq, payload FROM harness_records WHERE seq > :s ORDER BY seq LIMIT :n"),
                    {"s": after, "n": BATCH},
                ).fetchall()
            )
            for number, payload in rows:
                yield int(number), json.loads(payload)
                seq = int(number)
            if len(rows) < BATCH:
                return

    def count(self) -> int:
        from sqlalchemy import text

        return int(self._run(lambda con: con.execute(text("SELECT count(*) FROM harness_records")).scalar()))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
