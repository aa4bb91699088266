"""The static HTML report: generated data, exports and escaping (no browser needed here)."""

from __future__ import annotations

import csv
import json
import re

import duckdb
import pytest

from harness.errors import HarnessError
from harness.record import Leaderboard
from harness.report import generate_report
from harness.report.charts import pareto_front, pick_pareto_pair, script_json
from harness.report.data import is_substitute, split_recipe
from harness.report.importance import importance_group, infer_distribution
from tests.test_report_fixtures import XSS_ERROR, XSS_NAME, report_db  # noqa: F401


def _no_nan(token: str) -> None:
    raise AssertionError(f"{token} in the JSON export: JSON has no NaN")


@pytest.fixture(scope="module")
def report(report_db, tmp_path_factory):  # noqa: F811
    db, ids = report_db
    out = tmp_path_factory.mktemp("site") / "index.html"
    files = generate_report(db, out)
    payload = json.loads(files.json.read_text(), parse_constant=_no_nan)  # strict JSON
    by_id = {t["id"]: t for t in payload["trials"]}
    return files, payload, by_id, ids


def test_writes_html_json_and_csv_beside_each_other(report):
    files, payload, _, _ = report
    assert files.html.name == "index.html"
    assert files.json == files.html.with_suffix(".json") and files.json.exists()
    assert files.csv == files.html.with_suffix(".csv") and files.csv.exists()
    assert files.trials == len(payload["trials"]) == 13
    assert payload["empty_columns"] == []  # every leaderboard column has a row with it
    rows = list(csv.DictReader(files.csv.open()))
    assert len(rows) == 13


def test_order_and_ranks_follow_the_leaderboard(report, report_db):  # noqa: F811
    _, payload, _, ids = report
    ranking = Leaderboard(report_db[0]).ranking()
    # Same order as `harness leaderboard` up to equal averages, which the report orders by age.
    assert sorted(t["id"] for t in payload["trials"]) == sorted(r["id"] for r in ranking)
    for t, r in zip(payload["trials"], ranking, strict=True):
        assert t["cells"]["average"]["value"] == pytest.approx(r["average"])
        assert t["status"] == r["status"]
    position = {t["id"]: i for i, t in enumerate(payload["trials"])}
    assert position[ids["ko-en-merge#2"]] < position[ids["reused"]]  # original before its copy
    failed = [t for t in payload["trials"] if t["status"] == "failed"]
    assert [t["id"] for t in failed] == [ids["failed"]]
    assert failed[0]["rank"] is None and payload["trials"][-1]["id"] == ids["failed"]
    ranks = [t["rank"] for t in payload["trials"] if t["rank"] is not None]
    assert ranks == list(range(1, 13))


def test_ties_with_the_leader_use_the_combined_stderr(report):
    _, payload, by_id, ids = report
    assert payload["leader_id"] == ids["dpo"] and by_id[ids["dpo"]]["tie"] == "leader"
    lead = by_id[ids["dpo"]]["cells"]["average"]
    # average stderr = sqrt(5 * 0.02^2) / 5 for the five averaged benchmarks
    assert lead["stderr"] == pytest.approx((5 * 0.02**2) ** 0.5 / 5)
    for t in payload["trials"][1:]:
        cell = t["cells"]["average"]
        if cell["value"] is None:
            assert t["tie"] is None
            continue
        bound = (lead["stderr"] ** 2 + cell["stderr"] ** 2) ** 0.5
        assert (t["tie"] == "tied") == (abs(lead["value"] - cell["value"]) <= bound), t["name"]
    assert by_id[ids["ko-en-merge#2"]]["tie"] == "tied"  # 0.1 points behind
    assert by_id[ids["ko-en-merge#0"]]["tie"] is None  # 6.5 points behind


def test_no_data_is_not_zero_and_substitutes_are_labelled(report):
    files, _, by_id, ids = report
    xss = by_id[ids["nodata"]]["cells"]
    assert xss["truthfulqa_mc2"]["state"] == "no data" and xss["truthfulqa_mc2"]["value"] is None
    assert xss["truthfulqa_mc2"]["source"].startswith("no data:")
    assert xss["h4"]["state"] == "no data" and xss["h4_partial"]["value"] == pytest.approx(
        (0.33 + 0.31 + 0.26) / 3
    )
    assert xss["kmmlu"]["state"] == "missing"  # never evaluated on KMMLU
    base = by_id[ids["base"]]["cells"]
    assert base["arc_challenge"]["state"] == "substitute"  # validation instead of test
    assert base["hellaswag"]["state"] == "ok" and base["hellaswag"]["stderr"] == 0.02
    # H4 has no stderr row of its own: pooled from its four parts.
    assert base["h4"]["stderr"] == pytest.approx((4 * 0.02**2) ** 0.5 / 4)
    row = next(r for r in csv.DictReader(files.csv.open()) if r["id"] == ids["nodata"])
    assert row["truthfulqa_mc2"] == "" and row["truthfulqa_mc2_state"] == "no data"
    html = files.html.read_text()
    assert html.count('class="nodata-label">no data<') >= 2
    assert 'class="sub-label"' in html


def test_user_strings_are_escaped_everywhere(report):
    files, payload, by_id, ids = report
    html = files.html.read_text()
    assert XSS_NAME not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html
    assert "local:/tmp/<evil>" not in html
    # Exactly our own scripts: the chart JSON, plotly.js and the page script.
    assert len(re.findall(r"<script\b", html)) == 3
    specs = re.search(r'<script type="application/json" id="chart-specs">(.*?)</script>', html, re.S)
    assert specs and "<" not in specs.group(1)
    charts = json.loads(specs.group(1))
    text = json.dumps(charts)
    assert XSS_NAME not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert by_id[ids["xss"]]["name"] == XSS_NAME  # the JSON export keeps the real name
    assert by_id[ids["failed"]]["error"] == XSS_ERROR
    assert "</script" not in script_json({"x": "</script><script>alert(1)</script>"})


def test_page_is_offline_and_self_contained(report):
    files, _, _, _ = report
    html = files.html.read_text()
    # Nothing is loaded from elsewhere: no src/href to a URL, no stylesheet link, and a CSP
    # that forbids every fetch.
    markup = re.sub(r"<script\b.*?</script>", "", html, flags=re.S)  # plotly.js has URL strings
    assert not re.search(r'\b(src|href)\s*=\s*["\']?(https?:)?//', markup)
    assert "<link" not in markup and "@import" not in markup
    assert "default-src 'none'" in html
    assert "Plotly.newPlot" in html and "plotly.js v" in html  # plotly.js inlined once
    assert html.count("* plotly.js v") == 1


def test_details_carry_recipe_params_subjects_alignment_and_versions(report):
    files, _, by_id, ids = report
    dpo = by_id[ids["dpo"]]
    assert "merge_method: slerp" in dpo["recipe"]["mergekit"]
    assert dpo["recipe"]["align"].startswith("align:") and "sdpo" in dpo["recipe"]["align"]
    assert [s["step"] for s in dpo["align_steps"]] == [0, 1]
    assert dpo["align_steps"][1]["rewards_margins"] == pytest.approx(0.27)
    assert dpo["align_steps"][0]["metrics"] == {"learning_rate": 5e-6, "grad_norm": 1.3}
    assert dpo["align_steps"][1]["metrics"]["grad_norm"] is None  # NaN logged by TRL
    assert dpo["align_seconds"] == pytest.approx(61.5)
    families = {f["family"]: [r["subject"] for r in f["rows"]] for f in dpo["subjects"]}
    assert families == {
        "MMLU": ["anatomy", "astronomy", "virology"],
        "KMMLU": ["accounting", "korean_history", "law"],
    }
    trial = by_id[ids["ko-en-merge#1"]]
    assert trial["params"] == {
        "method": "ties",
        "ties.parameters.density": 0.5,
        "ties.parameters.weight": 0.7,
    }
    assert trial["versions"]["lm_eval"] and trial["task_versions"]["truthfulqa_mc2"] == "3.0"
    reused = by_id[ids["reused"]]
    assert reused["reused_from"] == ids["ko-en-merge#2"]
    assert reused["cells"]["average"]["value"] == by_id[ids["ko-en-merge#2"]]["cells"]["average"]["value"]
    html = files.html.read_text()
    assert "ties.parameters.density" in html and "korean_history" in html


def test_footer_has_reproducibility_facts(report):
    files, payload, _, _ = report
    repro = payload["reproducibility"]
    assert repro["library_versions"] and "torch" in repro["library_versions"][0]["versions"]
    assert {"1.0", "3.0"} <= {tv["version"] for tv in repro["task_versions"]}
    html = files.html.read_text()
    footer = html[html.index('<footer class="repro"') :]
    for word in ("lm_eval", "transformers", "torch", "mergekit", "task versions", "generated"):
        assert word in footer


def test_importances_per_study_and_method_subset(report):
    _, payload, _, _ = report
    groups = {(g["study"], g["group"]): g for g in payload["importances"]}
    assert groups[("dus-48", "all methods")]["note"].startswith("not enough trials")
    # Every ko-en-merge trial shares only "method"; the parameters are per method.
    assert set(groups[("ko-en-merge", "all methods")]["importances"]) == {"method"}
    ties = groups[("ko-en-merge", "ties")]["importances"]
    assert set(ties) == {"ties.parameters.density", "ties.parameters.weight"}
    assert sum(ties.values()) == pytest.approx(1.0)
    assert set(groups[("ko-en-merge", "slerp")]["importances"]) == {"slerp.parameters.t"}


def test_charts_are_built_for_history_importance_parameters_and_pareto(report):
    files, _, _, _ = report
    html = files.html.read_text()
    specs = json.loads(
        re.search(r'id="chart-specs">(.*?)</script>', html, re.S).group(1)  # type: ignore[union-attr]
    )
    by_id = {c["id"]: c for c in specs}
    assert {"chart-history", "chart-importance", "chart-pareto"} <= set(by_id)
    assert all(by_id[k]["figure"] for k in ("chart-history", "chart-importance", "chart-pareto"))
    history = by_id["chart-history"]["figure"]["data"]
    best = next(t for t in history if t["name"] == "ko-en-merge: best so far")["y"]
    assert best == sorted(best) and len(best) == 7  # monotone best-so-far over 7 ok trials
    params = [c for c in specs if c["id"].startswith("chart-param-")]
    assert params and all(c["figure"] for c in params)
    assert "H4 vs KMMLU" in by_id["chart-pareto"]["title"]


def test_empty_database_says_there_are_no_trials(tmp_path):
    db = tmp_path / "empty.duckdb"
    with Leaderboard(db).connect():  # creates the schema, no rows
        pass
    files = generate_report(db, tmp_path / "site" / "index.html")
    html = files.html.read_text()
    assert "No trials yet" in html and "Plotly.newPlot(" in html  # page script only
    assert "plotly.js v" not in html  # no charts: no need for the 4.8 MB library
    assert json.loads(files.json.read_text())["trials"] == []
    assert len(files.csv.read_text().splitlines()) == 1  # header only
    # A file that no harness command has written tables to is empty too.
    bare = tmp_path / "bare.duckdb"
    duckdb.connect(str(bare)).close()
    assert "No trials yet" in generate_report(bare, tmp_path / "b.html").html.read_text()


def test_missing_database_is_a_user_error(tmp_path):
    with pytest.raises(HarnessError, match="no leaderboard database"):
        generate_report(tmp_path / "nope.duckdb", tmp_path / "index.html")
    assert not (tmp_path / "index.html").exists()


# --------------------------------------------------------------------------- units


def test_substitute_detection():
    assert is_substitute("demo:ai2_arc/ARC-Challenge/validation (official: test)")
    assert is_substitute("demo:x (validation split instead of test)")
    assert is_substitute("mean of a, b; substitute data for arc_challenge")
    assert not is_substitute("hub:allenai/ai2_arc")
    assert not is_substitute("no data: TruthfulQA is not available offline")


def test_split_recipe_gives_a_plain_mergekit_config():
    parts = split_recipe("name: x\nmerge:\n  merge_method: slerp\nalign:\n  method: dpo\n")
    assert parts["mergekit"] == "merge_method: slerp\n"
    assert parts["align"] == "align:\n  method: dpo\n"
    assert split_recipe("merge_method: ties\n")["mergekit"] == "merge_method: ties\n"
    assert split_recipe(None) == {"full": None, "mergekit": None, "align": None}
    assert split_recipe("::: not yaml [")["full"] == "::: not yaml ["


def test_pareto_front_maximises_both():
    points = [(0.1, 0.9, 0), (0.5, 0.5, 1), (0.4, 0.4, 2), (0.9, 0.1, 3), (0.5, 0.2, 4)]
    assert [i for _, _, i in pareto_front(points)] == [0, 1, 3]


def test_pareto_pair_falls_back_to_keys_with_data():
    trials = [
        {"status": "ok", "summary": {"mmlu": 0.3, "arc_challenge": 0.4, "kmmlu": None}},
        {"status": "ok", "summary": {"mmlu": 0.2, "arc_challenge": 0.5}},
    ]
    assert pick_pareto_pair(trials) == ("arc_challenge", "mmlu")
    assert pick_pareto_pair(trials[:1]) is None


def test_distributions_are_inferred_from_stored_values():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    assert infer_distribution([0.1, 0.5, 0.3]) == FloatDistribution(0.1, 0.5)
    assert infer_distribution([0.2, 0.2]) is None  # never varied: nothing to attribute
    assert infer_distribution(["slerp", "ties", "slerp"]) == CategoricalDistribution(["slerp", "ties"])
    assert isinstance(infer_distribution([[0, 1], [1, 0]]), CategoricalDistribution)
    lone = importance_group("s", "all", [{"params": {"a": 1.0}, "objective": 0.5}])
    assert lone["note"].startswith("not enough trials") and lone["importances"] == {}


def test_proxy_scores_never_fill_the_benchmark_columns(tmp_path):
    """A 0-shot proxy of ARC-Challenge is not the 25-shot H4 number: its column stays empty."""
    from harness.evaluate.results import EvalResult, Score
    from harness.record import TrialRecord

    db = tmp_path / "lb.duckdb"
    source = "demo:ai2_arc/ARC-Challenge/validation (validation split instead of test)"
    result = EvalResult(
        scores=[Score("arc_challenge", "acc_norm", 0.4, 0.09, 30, 0, source, suite="proxy")],
        summary={"arc_challenge_0shot": 0.4, "proxy": 0.4},
    )
    Leaderboard(db).record(TrialRecord(name="proxy-only", source="search", objective=0.4), result)
    files = generate_report(db, tmp_path / "index.html")
    cells = json.loads(files.json.read_text())["trials"][0]["cells"]
    assert cells["arc_challenge"]["value"] is None and cells["average"]["value"] is None


def test_proxy_study_gets_objective_and_proxy_columns_ranked_by_objective(tmp_path):
    """A demo search scored only on a space's own suite: the table shows its objective and
    keys (total first, with stderr and the substitute label), ranks by objective and marks
    ties with the objective's stderr."""
    from harness.evaluate.results import EvalResult, Score
    from harness.record import TrialRecord

    db = tmp_path / "lb.duckdb"
    arc_src = "demo:ai2_arc/ARC-Challenge/validation (validation split instead of test)"
    board = Leaderboard(db)
    for name, arc, objective, se in (
        ("a", 0.30, 0.30, 0.05),
        ("b", 0.50, 0.50, 0.05),
        ("c", 0.45, 0.45, 0.05),
    ):
        result = EvalResult(
            scores=[Score("arc_challenge", "acc_norm", arc, 0.09, 30, 0, arc_src, suite="proxy")],
            summary={"arc_challenge_0shot": arc, "proxy_total": arc},
            summary_stderr={"arc_challenge_0shot": 0.09, "proxy_total": se},
            summary_source={"arc_challenge_0shot": arc_src, "proxy_total": "mean of arc_challenge_0shot"},
        )
        board.record(
            TrialRecord(name=name, source="search", study="demo", objective=objective, objective_stderr=se),
            result,
        )
    files = generate_report(db, tmp_path / "index.html")
    payload = json.loads(files.json.read_text())
    keys = [c["key"] for c in payload["columns"]]
    assert keys[-3:] == ["objective", "proxy_total", "arc_challenge_0shot"]
    assert payload["rank_key"] == "objective"
    rows = payload["trials"]
    assert [t["name"] for t in rows] == ["b", "c", "a"] and [t["rank"] for t in rows] == [1, 2, 3]
    assert [t["tie"] for t in rows] == ["leader", "tied", None]  # |0.05| <= 0.07; |0.20| is not
    cell = rows[0]["cells"]["arc_challenge_0shot"]
    assert cell["state"] == "substitute" and cell["stderr"] == pytest.approx(0.09)
    assert rows[0]["cells"]["objective"]["stderr"] == pytest.approx(0.05)
    html = files.html.read_text()
    assert 'data-key="objective"' in html and 'data-col="arc_challenge_0shot"' in html
    # No row has a leaderboard benchmark: those columns leave the table, not the exports.
    assert set(payload["empty_columns"]) == {
        "average",
        "h4",
        "hellaswag",
        "mmlu_macro",
        "truthfulqa_mc2",
        "mmlu",
        "kmmlu",
        "arc_challenge",
    }
    assert 'data-key="h4"' not in html and 'data-key="average"' not in html
    header = next(csv.reader(files.csv.read_text().splitlines()))
    assert {"objective_stderr", "proxy_total", "arc_challenge_0shot_stderr"} <= set(header)


def test_schema_1_files_gain_the_new_columns(tmp_path):
    """A leaderboard written before suite_scores had stderr/data_source keeps working."""
    from harness.record import TrialRecord

    db = tmp_path / "old.duckdb"
    Leaderboard(db).record(TrialRecord(name="old", source="eval", id="old"))
    with duckdb.connect(str(db)) as con:  # back to schema 1: drop what schema 2 added
        con.execute("ALTER TABLE trials DROP COLUMN objective_stderr")
        con.execute("ALTER TABLE suite_scores DROP COLUMN stderr")
        con.execute("ALTER TABLE suite_scores DROP COLUMN data_source")
        con.execute('ALTER TABLE suite_scores DROP COLUMN "partition"')
        con.execute("INSERT INTO suite_scores VALUES ('old', 'h4', 0.5)")
        con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        con.execute("ALTER TABLE trials DROP COLUMN written_by")
        con.execute("ALTER TABLE scores DROP COLUMN scoring_path")
    board = Leaderboard(db)
    board.record(TrialRecord(name="new", source="eval", objective=0.4, objective_stderr=0.1))
    with duckdb.connect(str(db), read_only=True) as con:
        cols = [r[0] for r in con.execute("DESCRIBE suite_scores").fetchall()]
        objective_se = con.execute("SELECT objective_stderr FROM trials WHERE name = 'new'").fetchone()[0]
        assert "scoring_path" in [r[0] for r in con.execute("DESCRIBE scores").fetchall()]
    assert cols == ["trial_id", "name", "value", "stderr", "data_source", "partition"] and objective_se == 0.1
    assert board.suite_summary("old") == {"h4": 0.5} and board.suite_summary("old", "stderr") == {"h4": None}
