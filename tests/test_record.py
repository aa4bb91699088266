"""The DuckDB leaderboard: contents, no-data semantics, transactions."""

from __future__ import annotations

import duckdb
import pytest

from harness.evaluate.results import EvalResult, Score
from harness.record import Leaderboard, TrialRecord


def result(arc: float | None, mmlu: float | None) -> EvalResult:
    return EvalResult(
        scores=[
            Score(
                "arc_challenge",
                "acc_norm",
                arc,
                0.05,
                20,
                25,
                "demo:ARC-Challenge/validation (official: test)",
            ),
            Score("mmlu_anatomy", "acc", mmlu, 0.04, 20, 5, "demo:hails/mmlu_no_train/anatomy"),
            Score(
                "truthfulqa_mc2",
                "acc",
                None,
                None,
                None,
                0,
                "no data: TruthfulQA is not available offline",
            ),
            Score("h4", "mean", None, aggregate=True, data_source="no data: truthfulqa_mc2 missing"),
        ],
        summary={"arc_challenge": arc, "mmlu": mmlu, "h4": None, "truthfulqa_mc2": None},
        task_versions={"arc_challenge": "1.0"},
        limit=20,
        seconds=12.5,
    )


def test_rows_scores_and_no_data(tmp_path):
    board = Leaderboard(tmp_path / "lb.duckdb")
    good = board.record(
        TrialRecord(name="good", source="eval", model_ref="demo:x", params={"t": 0.3, "method": "slerp"}),
        result(0.5, 0.4),
    )
    weak = board.record(TrialRecord(name="weak", source="eval"), result(0.3, 0.2))
    failed = board.record(TrialRecord(name="broken", source="build", status="failed", error="OOM"))
    ranking = board.ranking()
    assert [r["id"] for r in ranking] == [good, weak, failed]
    top = ranking[0]
    assert top["average"] == pytest.approx(0.45)  # mean of the benchmarks that have data
    assert top["h4"] is None and top["truthfulqa_mc2"] is None  # no data stays NULL, never 0
    assert ranking[2]["status"] == "failed" and ranking[2]["average"] is None
    assert board.ranking(top=1) == ranking[:1]

    with duckdb.connect(str(tmp_path / "lb.duckdb"), read_only=True) as con:
        trial = con.execute(
            "SELECT versions, eval_seconds, eval_limit FROM trials WHERE id = ?", [good]
        ).fetchone()
        assert '"lm_eval"' in trial[0] and '"mergekit"' in trial[0] and trial[1:] == (12.5, 20)
        rows = con.execute(
            "SELECT task, metric, value, n_samples, num_fewshot, data_source FROM scores "
            "WHERE trial_id = ? ORDER BY task",
            [good],
        ).fetchall()
        assert (
            "truthfulqa_mc2",
            "acc",
            None,
            None,
            0,
            "no data: TruthfulQA is not available offline",
        ) in rows
        params = dict(
            con.execute(
                "SELECT name, coalesce(CAST(value AS VARCHAR), value_text) FROM trial_params "
                "WHERE trial_id = ?",
                [good],
            ).fetchall()
        )
        assert params == {"t": "0.3", "method": '"slerp"'}


def test_rows_without_the_ranking_number_follow_by_their_search_objective(tmp_path):
    """A study ranks by its held-out confirmation; the trials that were not confirmed come
    after, best search objective first (not in trial order), rows with neither last."""
    board = Leaderboard(tmp_path / "lb.duckdb")
    rows = {"confirmed low": (0.30, 0.50), "confirmed high": (0.40, 0.40), "weak": (None, 0.20)}
    rows |= {"no objective": (None, None), "strong": (None, 0.45)}
    for name, (heldout, searched) in rows.items():
        board.record(TrialRecord(name=name, source="search", objective=searched, heldout_objective=heldout))
    names = [r["name"] for r in board.ranking()]
    assert names == ["confirmed high", "confirmed low", "strong", "weak", "no objective"]


def test_a_failing_write_leaves_nothing_behind(tmp_path):
    board = Leaderboard(tmp_path / "lb.duckdb")
    bad = result(0.5, 0.4)
    bad.scores.append(Score("x", "acc", object()))  # type: ignore[arg-type]  # not storable
    with pytest.raises(Exception):  # noqa: B017
        board.record(TrialRecord(name="half", source="eval"), bad)
    assert board.ranking() == []
    with duckdb.connect(str(tmp_path / "lb.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (0,)


def test_find_scored_matches_hash_suites_and_limit(tmp_path):
    board = Leaderboard(tmp_path / "lb.duckdb")
    tid = board.record(
        TrialRecord(name="a", source="search", recipe_hash="abc", suites="h4"), result(0.5, 0.4)
    )
    assert board.find_scored("abc", "h4", 20) == tid
    assert board.find_scored("abc", "h4", 50) is None
    assert board.find_scored("abc", "mmlu", 20) is None
    assert board.find_scored("zzz", "h4", 20) is None


def test_find_scored_prefers_a_confirmed_row_then_the_original(tmp_path):
    board = Leaderboard(tmp_path / "lb.duckdb")
    first = board.record(
        TrialRecord(name="a", source="search", recipe_hash="abc", suites="h4"), result(0.5, 0.4)
    )
    again = TrialRecord(name="b", source="search", recipe_hash="abc", suites="h4", eval_limit=20)
    copy = board.record_copy(again, first)
    assert board.find_scored("abc", "h4", 20) == first  # an unconfirmed copy: the original
    with board.connect() as con:  # the copy confirmed on the held-out questions (as a search does)
        con.execute("UPDATE trials SET heldout_objective = 0.4 WHERE id = ?", [copy])
    assert board.find_scored("abc", "h4", 20) == copy


def test_reused_trials_reuse_the_per_question_rows(tmp_path):
    from harness.evaluate.results import Sample

    board = Leaderboard(tmp_path / "lb.duckdb")
    scored = result(0.5, 0.4)
    scored.samples = [
        Sample("arc_challenge", 25, i, f"h{i}", "acc_norm", float(i % 2), "validation") for i in range(4)
    ]
    source = board.record(TrialRecord(name="a", source="search", recipe_hash="abc"), scored)
    copy = board.record_copy(TrialRecord(name="b", source="search", recipe_hash="abc"), source)
    with duckdb.connect(str(tmp_path / "lb.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT trial_id, count(*), sum(value) FROM samples GROUP BY trial_id ORDER BY trial_id = ?",
            [source],
        ).fetchall()
    assert rows == [(copy, 4, 2.0), (source, 4, 2.0)]


def test_the_leaderboard_table_shows_names_whole(tmp_path):
    """Reference models' names differ only at the end ("...-dpo-science", "...-dpo-commonsense"):
    with many score columns the table folds headers, never cuts a name to "demo:smollm2-13…"."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.evaluate import EvalResult

    board = Leaderboard(tmp_path / "lb.duckdb")
    names = ["demo:smollm2-135m-dpo-science", "demo:smollm2-135m-dpo-commonsense"]
    summary = {f"benchmark_number_{i}_0shot": 0.5 for i in range(7)}
    for name in names:
        trial = TrialRecord(name=name, source="search", study="s", objective=0.4, heldout_objective=0.3)
        board.record(trial, EvalResult(summary=summary))
    shown = CliRunner().invoke(app, ["leaderboard", "--db", str(board.path)])
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.stdout for name in names), shown.stdout
    assert "s reference" in shown.stdout  # the last column is not cut off either


def test_a_record_spooled_before_the_scoring_path_is_written_with_it_unknown(tmp_path) -> None:
    """A pending record left by a harness before schema 6 (score rows one column short) is
    written by this one, its scoring path NULL ("not recorded"), not rejected."""
    from harness.evaluate import EvalResult, Score
    from harness.record import scoring_paths

    board = Leaderboard(tmp_path / "lb.duckdb")
    result = EvalResult(
        scores=[Score("arc_challenge", "acc", 0.5, n_samples=2)], scoring_path="shared-prefix"
    )
    payload = board._payload(TrialRecord(name="old", source="eval", id="old"), result)
    payload["scores"] = [row[:-1] for row in payload["scores"]]  # as schema 5 spooled them
    board.spool.put(payload)
    assert board.flush_pending() == 0  # none left pending
    rows = board.scores("old")
    assert [(r["value"], r["scoring_path"]) for r in rows] == [(0.5, None)]
    assert scoring_paths(rows) == ["not recorded"]
