"""One leaderboard from several machines (issue 12): records appended to a log in a real
PostgreSQL server, every machine's DuckDB file materialised from it; versioned migrations."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.evaluate.results import EvalResult, Sample
from harness.record import Leaderboard, RecordLog, TrialRecord
from harness.record.schema import MIGRATIONS, SCHEMA_VERSION
from tests.test_record import result

CLI = CliRunner()
TABLES = ("trials", "scores", "suite_scores", "samples", "trial_params", "summary_parts")


def scored(value: float, partition: str = "all", n: int = 4) -> EvalResult:
    """A result with per-question rows (``n`` questions, ``value`` of them right on average)."""
    res = result(value, value)
    res.partition = partition
    right = round(value * n)
    res.samples = [
        Sample("arc_challenge", 25, i, f"h{i}", "acc_norm", float(i < right), "test", partition)
        for i in range(n)
    ]
    return res


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every row of the leaderboard's tables, sorted, minus the columns that say where it was written."""
    out = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for table in TABLES:
            cur = con.execute(f"SELECT * FROM {table}")
            cols = [d[0] for d in cur.description]
            keep = [i for i, c in enumerate(cols) if c not in ("written_by",)]
            out[table] = sorted(tuple(str(r[i]) for i in keep) for r in cur.fetchall())
    return out


def test_two_machines_write_one_board(tmp_path, postgres):
    url = postgres.database()
    a = Leaderboard(tmp_path / "a" / "lb.duckdb", log=RecordLog(url))  # machine A
    b = Leaderboard(tmp_path / "b" / "lb.duckdb", log=RecordLog(url))  # machine B
    for board in (a, b):
        board.check_writable()
    t1 = a.record(TrialRecord(name="one", source="search", params={"w": 0.5}), scored(0.5, "search"))
    t2 = b.record(TrialRecord(name="two", source="search"), scored(0.75, "search"))
    # A's trial is confirmed on held-out questions later: a second record of the same trial.
    a.record(TrialRecord(name="one", source="search", id=t1, params={"w": 0.5}), scored(0.25, "heldout"))
    for board in (a, b):
        board.refresh()
    c = Leaderboard(tmp_path / "c" / "lb.duckdb", log=RecordLog(url))  # a reader that wrote nothing
    c.refresh()
    assert dump(a.path) == dump(b.path) == dump(c.path)
    rows = dump(c.path)
    assert len(rows["trials"]) == 2
    # Both partitions of trial one survived its second record; nothing was duplicated by syncs.
    assert c.suite_summary(t1, partition="search")["arc_challenge"] == 0.5
    assert c.suite_summary(t1)["arc_challenge"] == 0.25
    assert c.suite_summary(t2, partition="search")["arc_challenge"] == 0.75
    assert len(rows["samples"]) == 12
    assert c.params(t1) == {"w": 0.5}
    # Syncing again applies nothing and changes nothing.
    before = dump(c.path)
    assert c.sync() == 0 and dump(c.path) == before
    assert RecordLog(url).count() == 3


def _append_many(url: str, db: str, worker: int, n: int) -> None:
    board = Leaderboard(db, log=RecordLog(url))
    for i in range(n):
        board.record(
            TrialRecord(name=f"w{worker}-{i}", source="search", trial_number=worker * 100 + i), scored(0.5)
        )


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path, postgres):
    """Four processes, two per "machine" (DuckDB file), append at once; a reader reads meanwhile."""
    url, n = postgres.database(), 6
    dbs = [str(tmp_path / "m0.duckdb"), str(tmp_path / "m1.duckdb")]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(url, dbs[w % 2], w, n)) for w in range(4)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):  # readers work while workers write
        res = CLI.invoke(
            app,
            ["leaderboard", "--db", str(tmp_path / "reader.duckdb"), "--storage", url, "--format", "json"],
        )
        assert res.exit_code == 0, res.output
        reads += 1
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert reads >= 1
    for db in (*dbs, str(tmp_path / "reader.duckdb")):
        board = Leaderboard(db, log=RecordLog(url))
        board.refresh()
        with duckdb.connect(db, read_only=True) as con:
            numbers = [
                r[0] for r in con.execute("SELECT trial_number FROM trials ORDER BY trial_number").fetchall()
            ]
            samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
        assert numbers == sorted(w * 100 + i for w in range(4) for i in range(n)), db
        assert samples == 4 * n * 4
    assert dump(Path(dbs[0])) == dump(Path(dbs[1])) == dump(tmp_path / "reader.duckdb")


def test_an_unreachable_log_spools_and_a_retried_append_is_a_noop(tmp_path, postgres):
    url = postgres.database()
    db = tmp_path / "lb.duckdb"
    dead = f"postgresql://harness@127.0.0.1:{postgres.port + 1}/nothing"  # no server there
    warnings: list[str] = []
    down = Leaderboard(db, warn=warnings.append, log=RecordLog(dead))
    tid = down.record(TrialRecord(name="kept", source="search"), scored(0.5, "search"))
    down.record(TrialRecord(name="kept", source="search", id=tid), scored(0.25, "heldout"))
    assert down.pending() == 2 and "kept in" in warnings[0]
    up = Leaderboard(db, log=RecordLog(url))
    assert up.refresh() == 0  # both appended, in order, then materialised
    assert up.suite_summary(tid, partition="search")["arc_challenge"] == 0.5
    assert up.suite_summary(tid)["arc_challenge"] == 0.25
    log = RecordLog(url)
    payload = json.loads(json.dumps(up._payload(TrialRecord(name="x", source="eval"), None), default=str))
    log.append(payload)
    log.append(payload)  # a retry after a lost reply
    assert log.count() == 3


def test_a_file_from_another_log_is_refused(tmp_path, postgres):
    db = tmp_path / "lb.duckdb"
    first = Leaderboard(db, log=RecordLog(postgres.database()))
    first.record(TrialRecord(name="a", source="eval"), scored(0.5))
    res = CLI.invoke(app, ["leaderboard", "--db", str(db), "--storage", postgres.database()])
    assert res.exit_code == 2 and "materialised from another leaderboard log" in res.stderr
    res = CLI.invoke(
        app, ["report", "--db", str(db), "--storage", "sqlite:///x.db", "--out", str(tmp_path / "r.html")]
    )
    assert res.exit_code == 2 and "not a PostgreSQL URL" in res.stderr
    other = Leaderboard(db, log=RecordLog(postgres.database()))
    with pytest.raises(Exception, match="materialised from another leaderboard log"):
        other.check_writable()


# --- versioned migrations ---------------------------------------------------------------------


def test_migrations_bring_an_old_file_up_once(tmp_path):
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:  # a file written at version 4, before `written_by`
        con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute(dict(MIGRATIONS)[4])
        con.execute("INSERT INTO meta VALUES ('schema_version', '4')")
        con.execute(
            "INSERT INTO trials (id, name, created_at, source, status) VALUES ('old', 'kept', now(), 'eval', 'ok')"
        )
    board = Leaderboard(db)
    new = board.record(TrialRecord(name="new", source="eval"), scored(0.5))
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        rows = dict(con.execute("SELECT id, written_by FROM trials").fetchall())
    assert rows["old"] is None and rows[new] == f"{os.uname().nodename}:{os.getpid()}"
    # Applied once: a second migration run would fail (ADD COLUMN of an existing column).
    board.record(TrialRecord(name="again", source="eval"), scored(0.5))


def test_a_file_from_a_newer_harness_is_refused(tmp_path):
    db = tmp_path / "new.duckdb"
    Leaderboard(db).record(TrialRecord(name="a", source="eval"), scored(0.5))
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    res = CLI.invoke(app, ["eval", "demo:x", "--db", str(db), "--suite", "arc_easy"])
    assert res.exit_code == 2 and "newer than this harness" in res.stderr
