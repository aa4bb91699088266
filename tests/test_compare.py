"""Paired statistics against hand-computed answers, and `harness compare` on recorded rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.compare import compare_trials
from harness.compare.stats import TaskDiffs, bootstrap_ci, holm, mcnemar_exact, paired_test, sign_flip_p
from harness.evaluate.results import EvalResult, Sample, Score
from harness.record import Leaderboard, TrialRecord


def test_exact_mcnemar_by_hand():
    # 7 discordant questions, 1 vs 6: P(X <= 1) for Bin(7, 1/2) = (1 + 7) / 128; two-sided x2.
    assert mcnemar_exact(1, 6) == pytest.approx(16 / 128)
    assert mcnemar_exact(6, 1) == pytest.approx(16 / 128)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    # 10 vs 0 discordant: 2 / 1024.
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 1024)


def test_paired_test_on_one_binary_task_is_mcnemar():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 1], dtype=float)
    b = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=float)
    t = paired_test([TaskDiffs(1.0, a - b, binary=True)])
    assert t.test == "exact McNemar" and t.p_value == pytest.approx(16 / 128)
    assert t.difference == pytest.approx(7 / 8 - 2 / 8) and t.questions == 8 and t.discordant == 7
    assert t.ci_low <= t.difference <= t.ci_high


def test_sign_flip_matches_its_exact_distribution():
    # Five equal positive differences: the exact randomization p is 2 / 2^5.
    d = np.array([0.3, 0.3, 0.3, 0.3, 0.3])
    assert sign_flip_p([TaskDiffs(1.0, d, binary=False)]) == pytest.approx(2 / 32, abs=0.012)
    # Symmetric differences: no evidence at all.
    assert sign_flip_p([TaskDiffs(1.0, np.array([0.5, -0.5, 0.2, -0.2]), binary=False)]) == 1.0


def test_bootstrap_of_constant_differences_is_that_constant():
    low, high = bootstrap_ci(
        [TaskDiffs(0.5, np.full(10, 0.2), False), TaskDiffs(0.5, np.full(4, 0.4), False)]
    )
    assert low == pytest.approx(0.3) and high == pytest.approx(0.3)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(., 2*0.03), max(., 1*0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_paired_finds_what_overlapping_stderrs_call_a_tie():
    """200 questions, the same answers but 8 that only A gets right: 0.04 apart, inside the
    combined independent stderr (~0.049), yet the paired test is clear (p = 2 / 2^8)."""
    rng = np.random.default_rng(1)
    b = (rng.random(200) < 0.5).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:8]] = 1.0
    combined_se = math.sqrt(a.mean() * (1 - a.mean()) / 200 + b.mean() * (1 - b.mean()) / 200)
    assert a.mean() - b.mean() <= combined_se  # the old rule: "tied with leader"
    assert paired_test([TaskDiffs(1.0, a - b, True)]).p_value == pytest.approx(2 / 256)


def _scored(values: dict[str, list[float]], shots: int = 0) -> EvalResult:
    """A result with per-question values per task; summary keys t1, t2 and their mean 'total'."""
    samples = [
        Sample(task, shots, i, f"{task}-{i}", "acc", v, "test")
        for task, vs in values.items()
        for i, v in enumerate(vs)
    ]
    means = {t: sum(vs) / len(vs) for t, vs in values.items()}
    parts = {t: {(t, "acc", shots): 1.0} for t in values}
    parts["total"] = {(t, "acc", shots): 1 / len(values) for t in values}
    summary = {**means, "total": sum(means.values()) / len(means)}
    scores = [Score(t, "acc", m, None, len(values[t]), shots) for t, m in means.items()]
    return EvalResult(scores=scores, summary=summary, samples=samples, summary_parts=parts)


@pytest.fixture
def board(tmp_path):
    board = Leaderboard(tmp_path / "lb.duckdb")
    ids = {
        "a": board.record(
            TrialRecord(name="a", source="search", objective_weights={"total": 1.0}),
            _scored({"t1": [1, 1, 1, 1, 1, 1, 0, 1], "t2": [1, 0, 1, 0]}),
        ),
        "b": board.record(
            TrialRecord(name="b", source="search", objective_weights={"total": 1.0}),
            _scored({"t1": [0, 0, 0, 0, 0, 0, 1, 1], "t2": [1, 0, 1, 0]}),
        ),
        "old": board.record(TrialRecord(name="old", source="eval"), EvalResult(summary={"t1": 0.5})),
    }
    return board, ids


def test_compare_trials_numbers_and_tasks(board):
    board, ids = board
    rows = {r.key: r for r in compare_trials(board, ids["a"], ids["b"])}
    assert {"t1", "t2", "total", "objective", "t1 acc 0-shot", "t2 acc 0-shot"} <= set(rows)
    t1 = rows["t1"]
    assert (t1.a, t1.b) == (pytest.approx(7 / 8), pytest.approx(2 / 8))
    assert t1.test.test == "exact McNemar" and t1.test.p_value == pytest.approx(16 / 128)
    assert rows["t2"].test.test == "no discordant questions" and rows["t2"].test.p_value == 1.0
    total = rows["total"]
    assert total.test.difference == pytest.approx((7 / 8 - 2 / 8) / 2)
    assert total.test.test == "sign-flip randomization"
    assert rows["objective"].test.difference == pytest.approx(total.test.difference)


def test_compare_cli_and_rows_without_samples(board):
    board, ids = board
    runner = CliRunner()
    res = runner.invoke(app, ["compare", ids["a"], ids["b"], "--db", str(board.path), "--key", "t1"])
    assert res.exit_code == 0, res.output
    assert (
        "exact McNemar" in res.stdout
        and "+0.6250" in res.stdout
        and "no significant difference" in res.stdout
    )
    res = runner.invoke(app, ["compare", ids["a"], ids["old"], "--db", str(board.path)])
    assert res.exit_code == 2 and "no per-question results" in res.stderr
    res = runner.invoke(app, ["compare", ids["a"], "nope", "--db", str(board.path)])
    assert res.exit_code == 2 and "no trial 'nope'" in res.stderr


def test_report_ties_come_from_the_paired_test(tmp_path):
    """Leader vs a row 4 points behind on 200 shared questions (8 discordant, all for the leader):
    overlapping stderrs would call it tied; the paired test does not. A row 1 question behind is
    tied; a row without per-question results falls back to the stderr rule and says so."""
    from harness.report.data import load_report_data

    rng = np.random.default_rng(1)
    base = (rng.random(200) < 0.5).astype(float)
    leader = base.copy()
    leader[np.flatnonzero(base == 0)[:8]] = 1.0
    close = leader.copy()
    close[np.flatnonzero(leader == 1)[0]] = 0.0
    board = Leaderboard(tmp_path / "lb.duckdb")

    def record(name: str, values: np.ndarray | None, **kw) -> str:
        if values is None:
            result = EvalResult(
                summary={"t1": 0.5, "total": 0.5}, summary_stderr={"t1": 0.035, "total": 0.035}
            )
            objective = 0.5
        else:
            result = _scored({"t1": list(values)})
            se = math.sqrt(values.mean() * (1 - values.mean()) / values.size)
            result.summary_stderr = {"t1": se, "total": se}
            objective = float(values.mean())
        trial = TrialRecord(name=name, source="search", study="s", objective=objective, **kw)
        trial.objective_stderr = result.summary_stderr["total"]
        trial.objective_weights = {"total": 1.0}
        return board.record(trial, result)

    record("leader", leader, trial_number=0)
    record("behind", base, trial_number=1)
    record("close", close, trial_number=2)
    record("legacy", None, trial_number=3)
    record("base-model", base)  # a reference: study s, no trial number
    data = load_report_data(board.path)
    rows = {t["name"]: t for t in data.trials}
    assert data.rank_key == "objective" and rows["leader"]["tie"] == "leader"
    assert rows["behind"]["tie"] is None and "p = 0.00781" in rows["behind"]["tie_note"]
    assert rows["close"]["tie"] == "tied" and "exact McNemar" in rows["close"]["tie_note"]
    assert rows["legacy"]["tie"] == "tied" and "unpaired" in rows["legacy"]["tie_note"]
    assert "Holm-adjusted over the 3 rows" in data.tie_rule  # behind, close, base (legacy has no samples)
    # Does the leader beat its parts? Its paired difference to the study's reference model.
    vs_base = {v["name"]: v for v in rows["leader"]["versus"]}["base-model"]
    assert vs_base["difference"] == pytest.approx(8 / 200) and vs_base["p_value"] == pytest.approx(2 / 256)
    vs_leader = {v["name"]: v for v in rows["close"]["versus"]}["leader"]
    assert vs_leader["difference"] == pytest.approx(-1 / 200) and vs_leader["holm_p"] is not None
    cli = CliRunner().invoke(app, ["leaderboard", "--db", str(board.path)])
    assert cli.exit_code == 0, cli.output
    lines = {line.split("│")[3].strip(): line for line in cli.stdout.splitlines() if line.count("│") > 5}
    assert "leader" in lines["leader"] and "tied" in lines["close"] and "tied" not in lines["behind"]
    assert "s#0" in lines["leader"] and "s reference" in lines["base-model"]  # never "s#None"
