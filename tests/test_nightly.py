"""`harness nightly` end to end on tiny models (issue 12): trials added, the best recipe
rebuilt and re-scored on the held-out questions, compared per question with its previous
measurement; a simulated regression exits 1. Real builds, real lm-eval, a real DuckDB file."""

from __future__ import annotations

import duckdb
import pytest
from typer.testing import CliRunner

from harness.cli import app
from tests.fixtures.evaluate_data import build_data_dir
from tests.test_search import write_space

pytestmark = pytest.mark.usefixtures("eval_env")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc",))


def _night(tmp_path, space, budget: int):
    args = ["nightly", "--space", str(space), "--budget", str(budget), "--db", str(tmp_path / "lb.duckdb")]
    args += ["--summary", str(tmp_path / "night.md"), "--report-out", str(tmp_path / "report" / "index.html")]
    return CliRunner().invoke(app, args)


def _rescores(db) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT id, recipe_hash FROM trials WHERE source = 'nightly' ORDER BY created_at"
        ).fetchall()


def test_nightly_rescores_the_best_recipe_and_flags_a_regression(tmp_path, tiny_models, data):
    # Held-out questions: half of the fixture's 30 ARC-Challenge documents, all of them.
    space = write_space(tmp_path, tiny_models, data, selection={"heldout_limit": None})
    first = _night(tmp_path, space, 2)
    assert first.exit_code == 0, first.output
    text = (tmp_path / "night.md").read_text()
    assert "**new best**" in text and "no regression" in text, text
    assert (tmp_path / "report" / "index.html").is_file()
    db = tmp_path / "lb.duckdb"
    ((rescore, recipe_hash),) = _rescores(db)
    with duckdb.connect(str(db), read_only=True) as con:
        best = con.execute(
            "SELECT count(*) FROM trials WHERE source = 'search' AND recipe_hash = ?", [recipe_hash]
        ).fetchone()[0]
        heldout = con.execute(
            "SELECT count(DISTINCT doc_id) FROM samples WHERE trial_id = ? AND partition = 'heldout'",
            [rescore],
        ).fetchone()[0]
    assert best >= 1 and heldout >= 10  # the leader's recipe, on the held-out questions

    # Same code, same model: tonight equals last night (no discordant question).
    second = _night(tmp_path, space, 0)
    assert second.exit_code == 0, second.output
    assert "no regression" in (tmp_path / "night.md").read_text()

    # Simulated regression: last night's re-score answered every question right.
    last = _rescores(db)[-1][0]
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE samples SET value = 1.0 WHERE trial_id = ?", [last])
    third = _night(tmp_path, space, 0)
    text = (tmp_path / "night.md").read_text()
    assert third.exit_code == 1, third.output
    assert "**REGRESSION**" in text and f"vs previous `{last}`" in text, text
