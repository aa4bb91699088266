"""Selection: the search / held-out division, rungs and pruning, held-out confirmation."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.errors import HarnessError
from harness.evaluate import evaluate_model, plan_evaluation
from harness.evaluate.fast_lm import SharedPrefixHFLM
from harness.evaluate.lm_eval_compat import samples_argument, task_doc_hashes
from harness.evaluate.questions import QuestionOrder, SplitRule, question_order
from harness.evaluate.suites import Part, Suite
from harness.evaluate.tasks import run_task_manager
from harness.record import Leaderboard
from tests.fixtures.evaluate_data import MMLU_SUBJECTS, build_data_dir
from tests.test_search import db_rows, run, write_space

pytestmark = pytest.mark.usefixtures("eval_env")  # the module's private evaluation env (conftest)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("eval_data"), parts=("arc", "mmlu"))


@pytest.fixture(scope="module")
def official_data(tmp_path_factory) -> Path:
    """MMLU with its validation split too: a study searches on it and holds out all of test."""
    return build_data_dir(tmp_path_factory.mktemp("official_data"), parts=("arc", "mmlu", "mmlu_validation"))


# --------------------------------------------------------------------------- the division


def test_division_is_disjoint_seeded_and_follows_the_document():
    hashes = [f"doc-{i}" for i in range(400)]
    order = QuestionOrder({"t": hashes}, SplitRule(heldout_fraction=0.3, seed=1)).tasks["t"]
    assert not set(order.search) & set(order.heldout)
    assert sorted(order.search + order.heldout) == list(range(400))
    assert 90 <= len(order.heldout) <= 150  # 30 % of 400, within sampling noise
    again = QuestionOrder({"t": hashes}, SplitRule(heldout_fraction=0.3, seed=1)).tasks["t"]
    assert again == order  # a resumed study (another process) gets the same division and order
    other_seed = QuestionOrder({"t": hashes}, SplitRule(heldout_fraction=0.3, seed=2)).tasks["t"]
    assert set(other_seed.heldout) != set(order.heldout)
    # A re-ordered dataset keeps every document on its side (the hash is of the document).
    shuffled = hashes[:]
    random.Random(0).shuffle(shuffled)
    moved = QuestionOrder({"t": shuffled}, SplitRule(heldout_fraction=0.3, seed=1)).tasks["t"]
    assert {shuffled[i] for i in moved.heldout} == {hashes[i] for i in order.heldout}


def test_rungs_are_prefixes_and_ids_sorted():
    order = QuestionOrder({"a": [f"a{i}" for i in range(50)], "b": ["b0", "b1"]}, SplitRule())
    small, large = order.choose("search", 3), order.choose("search", 10)
    assert set(small["a"]) <= set(large["a"]) and len(small["a"]) == 3
    assert all(ids == sorted(ids) for ids in large.values())
    assert len(order.tasks["b"].search) == len(order.tasks["b"].heldout) == 1  # a tiny task keeps both
    assert order.choose("search", 10, start=5)["a"] == sorted(order.tasks["a"].search[5:10])
    assert "b" not in order.choose("search", 5, start=1)  # nothing left: lm-eval must not run it
    with pytest.raises(ValueError, match="would score all"):
        samples_argument({"a": []})


# --------------------------------------------------------------------------- lm-eval boundary


@pytest.fixture(scope="module")
def tiny(tiny_models):
    path = tiny_models["base"]
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def test_chosen_questions_are_the_scored_ones_with_lm_evals_hash(tiny, data, tmp_path, monkeypatch):
    """The boundary test for lm-eval internals: doc ids map back right (samples= needs sorted
    ids), our doc hash is the one lm-eval logs, and a cached rung gives lm-eval's own numbers
    for the whole set while computing only the new requests."""
    model, tokenizer = tiny
    suites = ["arc_challenge", "mmlu"]
    plan = plan_evaluation(suites, data_dir=data)
    order = question_order(str(plan.include_dir), plan.leaves(), SplitRule())
    first, second = order.choose("search", 2), order.choose("search", 5)
    shuffled = {task: list(reversed(ids)) for task, ids in second.items()}

    rows: list[int] = []  # requests that reach the model (past the remembered answers)
    real = SharedPrefixHFLM._loglikelihood_tokens

    def counting(self, requests, *args, **kwargs):
        rows.append(len(requests))
        return real(self, requests, *args, **kwargs)

    monkeypatch.setattr(SharedPrefixHFLM, "_loglikelihood_tokens", counting)
    cache: dict = {}
    kw = {"data_dir": data, "progress": False, "plan": plan, "partition": "search"}
    evaluate_model(model, tokenizer, suites, questions=first, cache=cache, **kw)
    rung = evaluate_model(model, tokenizer, suites, questions=shuffled, cache=cache, **kw)
    computed_in_rungs = sum(rows)
    rows.clear()
    direct = evaluate_model(model, tokenizer, suites, questions=second, **kw)
    assert sum(rows) == computed_in_rungs  # the rung recomputed nothing

    assert rung.summary == direct.summary and rung.scores == direct.scores
    assert {(s.task, s.doc_id) for s in rung.samples} == {(t, i) for t, ids in second.items() for i in ids}
    for sample in rung.samples:
        assert sample.doc_hash == order.tasks[sample.task].hashes[sample.doc_id]
        assert sample.partition == "search"


def test_reading_the_documents_draws_no_datasets_bars(tmp_path, capfd):
    """The division loads every task's data before anything is scored; datasets' "Generating
    split" and "Map" bars from it would cut into the search's own progress line."""
    from datasets.utils import logging as ds_logging

    plan = plan_evaluation(["arc_challenge"], data_dir=build_data_dir(tmp_path, parts=("arc",)), divided=True)
    ds_logging.enable_progress_bar()
    question_order(str(plan.include_dir), plan.leaves(), SplitRule())
    assert "Generating" not in capfd.readouterr().err
    assert ds_logging.is_progress_bar_enabled()  # restored for the code that comes after


# --------------------------------------------------------------------------- official splits


def test_an_official_search_split_is_searched_and_every_scored_question_held_out(tiny, official_data):
    """MMLU's validation split is the search part and its whole test split the held-out part,
    with lm-eval's own doc ids and the same numbers as an undivided run (appending the search
    documents changes nothing about how a held-out question is asked). ARC, whose only local
    split is the scored one, is divided by the seeded hash."""
    model, tokenizer = tiny
    suites = ["arc_challenge", "mmlu"]
    plan = plan_evaluation(suites, data_dir=official_data, divided=True)
    splits = plan.search_splits()
    assert splits == {f"mmlu_{subject}": "validation" for subject in MMLU_SUBJECTS}
    order = question_order(str(plan.include_dir), plan.leaves(), SplitRule(), splits)
    plain = plan_evaluation(suites, data_dir=official_data)
    assert plain.search_splits() == {}
    plain_hashes, _ = task_doc_hashes(plain.leaves(), run_task_manager(str(plain.include_dir)))
    for task, split in splits.items():
        tested = plain_hashes[task]
        divided = order.tasks[task]
        assert divided.search_split == split and divided.hashes[: len(tested)] == tuple(tested)
        assert sorted(divided.heldout) == list(range(len(tested)))  # every test question
        assert sorted(divided.search) == list(range(len(tested), len(tested) + 3))  # 3 validation ones
        assert not set(divided.hashes[len(tested) :]) & set(tested)
    arc = order.tasks["arc_challenge"]
    assert arc.search_split is None and arc.search and arc.heldout

    kw = {"data_dir": official_data, "progress": False}
    search = evaluate_model(
        model, tokenizer, suites, questions=order.choose("search", None), partition="search", plan=plan, **kw
    )
    assert {s.split for s in search.samples if s.task.startswith("mmlu")} == {"validation"}
    assert {(s.task, s.doc_id) for s in search.samples if s.task in splits} == {
        (t, i) for t in splits for i in order.tasks[t].search
    }
    heldout_ids = order.choose("heldout", None)
    heldout = evaluate_model(
        model, tokenizer, suites, questions=heldout_ids, partition="heldout", plan=plan, **kw
    )
    undivided = evaluate_model(
        model, tokenizer, suites, questions=heldout_ids, partition="heldout", plan=plain, **kw
    )
    assert {s.split for s in heldout.samples if s.task.startswith("mmlu")} == {"test"}
    assert heldout.samples == undivided.samples and heldout.scores == undivided.scores
    assert heldout.summary == undivided.summary


def _suite(task: str, search_split: str | None) -> Suite:
    return Suite(f"s_{search_split}", "one part", (Part(task, 0, "acc", {task: "lm_eval"}, search_split),))


def test_a_search_split_that_cannot_divide_is_bad_input(official_data):
    with pytest.raises(HarnessError, match="search_split train cannot divide arc_challenge: its local copy"):
        plan_evaluation([_suite("arc_challenge", "train")], data_dir=official_data, divided=True)
    with pytest.raises(HarnessError, match="validation is the split it is scored on"):
        plan_evaluation([_suite("arc_challenge", "validation")], data_dir=official_data, divided=True)
    with pytest.raises(HarnessError, match="the same search_split"):
        plan_evaluation(
            [_suite("mmlu_anatomy", "hash"), _suite("mmlu_anatomy", None)],
            data_dir=official_data,
            divided=True,
        )
    # "hash" keeps a task with an official split hashed; an undivided plan ignores the setting.
    assert (
        plan_evaluation(
            [_suite("mmlu_anatomy", "hash")], data_dir=official_data, divided=True
        ).search_splits()
        == {}
    )
    assert plan_evaluation([_suite("arc_challenge", "train")], data_dir=official_data).search_splits() == {}


def test_a_study_searches_on_the_official_split_and_ranks_on_the_scored_one(
    tmp_path, tiny_models, official_data
):
    """A space suite part with the dataset's default: the objective sees MMLU validation
    questions only, the board ranks test questions, every row names its split, and the
    records say how the study divided its questions."""
    suite = {
        "name": "proxy",
        "parts": [{"task": "mmlu_anatomy", "num_fewshot": 0, "metric": "acc", "key": "anatomy"}],
    }
    space = write_space(
        tmp_path,
        tiny_models,
        official_data,
        suites=[suite],
        objective={"maximize": {"anatomy": 1.0}},
        references=["$base"],
    )
    runner, outcome = run(space, tmp_path, 2, confirm_top=1)
    assert outcome.confirmed >= 1
    splits = db_rows(
        tmp_path,
        "SELECT partition, split, count(DISTINCT doc_id), min(doc_id), max(doc_id) FROM samples "
        "GROUP BY ALL ORDER BY 1",
    )
    # heldout_limit 4 of the 6 test questions (ids 0-5); the 3 validation ones follow them.
    assert [row[:3] for row in splits] == [("heldout", "test", 4), ("search", "validation", 3)]
    assert splits[0][4] <= 5 and (splits[1][3], splits[1][4]) == (6, 8)
    rules = {r for (r,) in db_rows(tmp_path, "SELECT DISTINCT split_rule FROM trials")}
    assert rules == {
        "official search split (validation for mmlu_anatomy), every scored question held out; "
        "elsewhere seeded hash split: 50% search / 50% held-out (seed 0)"
    }


# --------------------------------------------------------------------------- in a search


def _heldout_hashes(runner) -> set[str]:
    order = runner.scorer.order
    return {t.hashes[i] for t in order.tasks.values() for i in t.heldout}


def test_heldout_questions_never_reach_the_objective(tmp_path, tiny_models, data):
    space = write_space(tmp_path, tiny_models, data, references=["$base"], selection={"heldout_limit": 5})
    runner, outcome = run(space, tmp_path, 3, confirm_top=1)
    heldout = _heldout_hashes(runner)
    search_rows = db_rows(tmp_path, "SELECT trial_id, doc_hash FROM samples WHERE partition = 'search'")
    assert search_rows and not {h for _, h in search_rows} & heldout
    # What Optuna was told is the mean over the search rows (a bare task: its first metric, acc),
    # and its steps are search questions.
    trials = runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    objectives = dict(
        db_rows(
            tmp_path,
            "SELECT t.trial_number, avg(s.value) FROM samples s JOIN trials t ON t.id = s.trial_id "
            "WHERE s.partition = 'search' AND s.metric = 'acc' AND t.trial_number IS NOT NULL GROUP BY ALL",
        )
    )
    for trial in trials:
        assert trial.value == pytest.approx(objectives[trial.number])
        search_ids = set(runner.scorer.order.tasks["arc_challenge"].search)
        assert {step % 10_000_000 for step in trial.intermediate_values} <= search_ids
    # The held-out rows are the board's: the confirmed trials and the reference.
    confirmed = db_rows(
        tmp_path,
        "SELECT DISTINCT t.name, t.heldout_objective IS NOT NULL FROM samples s "
        "JOIN trials t ON t.id = s.trial_id WHERE s.partition = 'heldout'",
    )
    assert confirmed and all(has for _, has in confirmed)
    assert {
        h for (h,) in db_rows(tmp_path, "SELECT doc_hash FROM samples WHERE partition = 'heldout'")
    } <= heldout
    # Confirmed: every trial that was the best when it finished (top 1), so the final best is.
    best = max(trials, key=lambda t: t.value)
    names = {name for name, _ in confirmed}
    assert any(name.startswith(f"tiny#{best.number}-") for name in names)
    board_rows = Leaderboard(tmp_path / "lb.duckdb").ranking()
    assert board_rows[0]["heldout_objective"] is not None  # ranked by the held-out objective
    assert outcome.confirmed >= 1 and outcome.questions > 0


def test_pruned_trials_keep_their_fidelity_and_are_not_ranked(tmp_path, tiny_models, data):
    from harness.search import SearchOptions, SearchRunner, load_space

    selection = {"rungs": [3], "p_threshold": 0.6, "heldout_limit": 4, "confirm_top": 2}
    # acc_norm: the tiny models' acc on ARC is 0 for every trial, which nothing can prune.
    suite = {
        "name": "arc_norm",
        "parts": [{"task": "arc_challenge", "metric": "acc_norm", "key": "arc_norm"}],
    }
    space = write_space(
        tmp_path,
        tiny_models,
        data,
        limit=12,
        selection=selection,
        suites=[suite],
        objective={"maximize": {"arc_norm": 1.0}},
        references=["$base"],
    )
    runner = SearchRunner(load_space(space), SearchOptions(budget=4, db=tmp_path / "lb.duckdb"))
    # The tiny merges answer almost alike, so give the study a best trial that got every search
    # question right: the pruner then stops each real trial at its first wrong answer's rung.
    steps = {runner._step("arc_challenge", i): 1.0 for i in runner.scorer.order.tasks["arc_challenge"].search}
    runner.study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values=steps))
    outcome = runner.run()
    pruned = runner.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert pruned and outcome.pruned == len(pruned)  # deterministic: seeded models and sampler
    rows = db_rows(
        tmp_path,
        "SELECT trial_number, status, fidelity, heldout_objective FROM trials WHERE trial_number IS NOT NULL",
    )
    by_number = {r[0]: r for r in rows}
    for trial in pruned:
        _, status, fidelity, heldout = by_number[trial.number]
        assert (status, fidelity, heldout) == ("pruned", 3, None)
        # Its per-question rows are the first rung's questions only.
        counted = db_rows(
            tmp_path,
            "SELECT count(DISTINCT s.doc_id) FROM samples s JOIN trials t ON t.id = s.trial_id "
            f"WHERE t.trial_number = {trial.number}",
        )
        assert counted[0][0] == 3
    assert all(r[2] == 12 for r in rows if r[1] == "ok")
    assert len(pruned) == 3  # every real trial: each answers some search question wrong
    assert outcome.questions == 3 * 3  # question-evaluations spent: 3 per pruned trial
    ranking = Leaderboard(tmp_path / "lb.duckdb").ranking()
    statuses = [r["status"] for r in ranking]
    assert statuses.index("pruned") > max(i for i, s in enumerate(statuses) if s == "ok")


def test_a_resumed_study_keeps_the_question_order(tmp_path, tiny_models, data):
    from harness.evaluate import questions

    space = write_space(tmp_path, tiny_models, data, selection={"confirm_top": 0})
    run(space, tmp_path, 2)
    questions._hashes.cache_clear()  # a new process reads and hashes the documents again
    run(space, tmp_path, 3)
    sets = db_rows(
        tmp_path,
        "SELECT trial_id, list(doc_hash ORDER BY doc_hash) FROM samples WHERE partition = 'search' GROUP BY ALL",
    )
    assert len(sets) == 3 and len({tuple(s) for _, s in sets}) == 1
    # Another division (here a new seed) would pair trials on different questions: refused.
    reseeded = write_space(tmp_path, tiny_models, data, selection={"confirm_top": 0, "seed": 1})
    with pytest.raises(HarnessError, match="divided its questions as"):
        run(reseeded, tmp_path, 1)


# --------------------------------------------------------------------------- the board's view


def _proxy(value: float, stderr: float, partition: str):
    from harness.evaluate import EvalResult

    return EvalResult(
        summary={"proxy": value},
        summary_stderr={"proxy": stderr},
        summary_source={"proxy": "x"},
        partition=partition,
    )


def test_the_board_ranks_held_out_numbers_only(tmp_path):
    """Held-out objective ranks; search numbers never fill a column; pruned and unconfirmed
    rows are not ranked; a gap beyond the references' is flagged."""
    from harness.record import TrialRecord
    from harness.report.data import load_report_data

    board = Leaderboard(tmp_path / "lb.duckdb")
    weights = {"proxy": 1.0}

    def add(name, number, status, search, heldout=None):
        record = TrialRecord(name=name, source="search" if number is not None else "eval", study="s")
        record.trial_number, record.status, record.objective = number, status, search
        record.objective_stderr, record.objective_weights, record.fidelity = 0.02, weights, 30
        board.record(record, _proxy(search, 0.02, "search"))
        if heldout is not None:
            record.heldout_objective, record.heldout_objective_stderr = heldout, 0.02
            board.record(record, _proxy(heldout, 0.02, "heldout"))
        return record.id

    add("base", None, "ok", 0.50, 0.48)  # the reference: held-out 0.02 below search
    honest = add("s#0", 0, "ok", 0.60, 0.57)
    lucky = add("s#1", 1, "ok", 0.70, 0.52)  # selected on luck: gap 0.18 vs 0.02 expected
    unconfirmed = add("s#2", 2, "ok", 0.55)
    pruned = add("s#3", 3, "pruned", 0.30)

    ranking = board.ranking()
    assert [r["name"] for r in ranking[:3]] == ["s#0", "s#1", "base"]  # by held-out objective
    assert {r["id"]: r["proxy"] for r in ranking}[unconfirmed] is None  # a search number: no column
    assert ranking[-1]["id"] == pruned
    data = load_report_data(tmp_path / "lb.duckdb")
    rows = {t["id"]: t for t in data.trials}
    assert data.rank_key == "heldout_objective"
    assert rows[unconfirmed]["rank"] is None and rows[pruned]["rank"] is None
    assert rows[honest]["rank"] == 1 and rows[honest]["cells"]["proxy"]["value"] == 0.57
    assert rows[lucky]["overfit"]["flagged"] and not rows[honest]["overfit"]["flagged"]
    assert rows[honest]["search_summary"] == {"proxy": 0.60}


def test_eval_seconds_add_up_every_rung_and_the_confirmation(tmp_path, tiny_models, data):
    from harness.search import SearchOptions, SearchRunner, load_space

    space = write_space(
        tmp_path,
        tiny_models,
        data,
        limit=9,
        selection={"rungs": [3, 6], "heldout_limit": 4, "confirm_top": 1},
    )
    runner = SearchRunner(load_space(space), SearchOptions(budget=1, db=tmp_path / "lb.duckdb"))
    measured: list[float] = []
    measure = runner.scorer.measure

    def timed(*args, **kwargs):  # the real call; only its reported seconds are collected
        result = measure(*args, **kwargs)
        measured.append(result.seconds)
        return result

    runner.scorer.measure = timed  # type: ignore[method-assign]
    runner.run()
    assert len(measured) == 4  # three rungs, then the held-out confirmation
    ((eval_seconds,),) = db_rows(tmp_path, "SELECT eval_seconds FROM trials WHERE trial_number = 0")
    assert eval_seconds == pytest.approx(sum(measured))


# --------------------------------------------------------------------------- confirmation at the end

ARC_NORM = {"name": "arc_norm", "parts": [{"task": "arc_challenge", "metric": "acc_norm", "key": "arc_norm"}]}


def _confirm_space(where: Path, tiny_models, data, methods: dict | None = None, **selection) -> Path:
    # acc_norm on 12 questions: the tiny merges' objectives differ (acc is 0 for all of them).
    return write_space(
        where,
        tiny_models,
        data,
        limit=12,
        suites=[ARC_NORM],
        objective={"maximize": {"arc_norm": 1.0}},
        selection={"heldout_limit": 4, "confirm_top": 2, **selection},
        **({"methods": methods} if methods else {}),
    )


def _confirmed(where: Path) -> dict[int, float]:
    return dict(
        db_rows(
            where,
            "SELECT trial_number, heldout_objective FROM trials "
            "WHERE trial_number IS NOT NULL AND heldout_objective IS NOT NULL",
        )
    )


def _top(runner, k: int) -> set[int]:
    done = runner.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    return {t.number for t in done if sum(u.value > t.value for u in done) < k}


def test_the_top_k_are_confirmed_at_the_end_from_kept_weights(tmp_path, tiny_models, data):
    outcomes = {}
    for when in ("finish", "end"):
        where = tmp_path / when
        where.mkdir()
        runner, outcome = run(_confirm_space(where, tiny_models, data, confirm_at=when), where, 6)
        outcomes[when] = (runner, outcome, _confirmed(where))
    runner, outcome, confirmed = outcomes["end"]
    top = _top(runner, 2)
    assert set(confirmed) == top and outcome.confirmed == len(top)
    assert not list(runner.kept.folder.iterdir())  # every kept model confirmed or dropped
    # The same seeded trials confirmed as they finished, from the model in memory: the kept
    # weights give the very same held-out numbers, and confirming as they finish cost more.
    finish_runner, finish_outcome, finish_confirmed = outcomes["finish"]
    assert _top(finish_runner, 2) == top
    assert {n: finish_confirmed[n] for n in top} == confirmed
    assert finish_outcome.confirmed > outcome.confirmed
    # The board ranks on the held-out questions, and "tied with leader" comes from the paired
    # test on them for every ranked row, never the unpaired stderr fallback.
    from harness.report.data import load_report_data

    report = load_report_data(tmp_path / "end" / "lb.duckdb")
    others = [t for t in report.trials if t["rank"] is not None and t["id"] != report.leader_id]
    assert report.rank_key == "heldout_objective" and others
    assert all("questions)" in (t.get("tie_note") or "") for t in others), [t.get("tie_note") for t in others]
    assert f"over the {len(others)} rows compared" in report.tie_rule


def test_kept_weights_wait_for_the_next_run_when_one_stops_early(tmp_path, tiny_models, data):
    from harness.search import SearchOptions, SearchRunner, load_space

    space = _confirm_space(tmp_path, tiny_models, data, confirm_top=1)
    runner = SearchRunner(load_space(space), SearchOptions(budget=1, db=tmp_path / "lb.duckdb"))
    runner.run_one()  # a finished trial, then the run stops before its end (as Ctrl-C would)
    assert len(list(runner.kept.entries())) == 1 and not _confirmed(tmp_path)
    again, outcome = run(space, tmp_path, 1)  # the budget is spent: no trial, the confirmation
    assert outcome.ran == 0 and outcome.confirmed == 1 and set(_confirmed(tmp_path)) == {0}
    assert not list(again.kept.folder.iterdir())


def test_a_reused_trial_in_the_top_k_is_built_again_and_confirmed(tmp_path, tiny_models, data):
    """Another study scored this recipe without confirming it; this study reuses its search
    scores, and as the study's best it still gets its held-out confirmation."""
    linear = {
        "merge_method": "linear",
        "models": [
            {"model": "$donor_a", "parameters": {"weight": 0.5}},
            {"model": "$donor_b", "parameters": {"weight": 0.5}},
        ],
    }
    space = _confirm_space(tmp_path, tiny_models, data, methods={"linear": linear}, confirm_top=1)
    run(space, tmp_path, 1, study_name="first", confirm_top=0)
    runner, outcome = run(space, tmp_path, 1, study_name="second")
    assert outcome.reused == 1 and outcome.confirmed == 1
    rows = db_rows(
        tmp_path,
        "SELECT study, id, reused_from, fidelity, heldout_objective FROM trials "
        "WHERE trial_number IS NOT NULL ORDER BY study",
    )
    (_, first_id, _, first_fidelity, first_heldout), (_, second_id, source, fidelity, heldout) = rows
    assert first_heldout is None and source == first_id  # the search scores are the first study's
    assert heldout is not None and fidelity == first_fidelity == 12
    searched = "SELECT count(*) FROM samples WHERE trial_id = '{}' AND partition = '{}'"
    assert db_rows(tmp_path, searched.format(second_id, "search")) == db_rows(
        tmp_path, searched.format(first_id, "search")
    )
    assert db_rows(tmp_path, searched.format(second_id, "heldout"))[0][0] > 0
    # The leaderboard ranks it, and its held-out numbers are the reference's paired questions.
    assert Leaderboard(tmp_path / "lb.duckdb").ranking(study="second")[0]["id"] == second_id
    assert not list(runner.kept.folder.iterdir())
    # A third study reuses the confirmed row (the second study's copy, not the unconfirmed
    # original): its held-out score comes along, and nothing is built or confirmed again.
    _, outcome = run(space, tmp_path, 1, study_name="third")
    assert outcome.reused == 1 and outcome.confirmed == 0
    ((third_id, source, heldout_again),) = db_rows(
        tmp_path, "SELECT id, reused_from, heldout_objective FROM trials WHERE study = 'third'"
    )
    assert source == second_id and heldout_again == heldout
    assert db_rows(tmp_path, searched.format(third_id, "heldout")) == db_rows(
        tmp_path, searched.format(second_id, "heldout")
    )
    # Within one study the recipe is confirmed once, as the first trial that drew it.
    alone = tmp_path / "alone"
    alone.mkdir()
    _, outcome = run(space, alone, 3)
    assert outcome.ran == 1 and outcome.reused == 2 and outcome.confirmed == 1


def test_a_trial_whose_weights_cannot_be_kept_is_confirmed_at_once(tmp_path, tiny_models, data, monkeypatch):
    from harness.search.confirm import KeptModels

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(KeptModels, "keep", full_disk)
    _, outcome = run(_confirm_space(tmp_path, tiny_models, data, confirm_top=1), tmp_path, 1)
    assert outcome.confirmed == 1 and set(_confirmed(tmp_path)) == {0}


def test_kept_entries_belong_to_their_live_worker(tmp_path):
    import json
    import os
    import socket
    import time

    from harness.record import TrialRecord
    from harness.search.confirm import ORPHAN_AGE_S, RECORD_FILE, WRITER_FILE, KeptModels
    from harness.search.workers import worker_identity

    kept = KeptModels(tmp_path)
    parent = worker_identity() | {"pid": os.getppid(), "start": None}  # alive, not this process
    workers = {
        "mine": kept.me,
        "dead": {"host": socket.gethostname(), "pid": 2**22 + 1, "start": "1"},
        "live": parent,
        "remote": {"host": "elsewhere", "pid": 1, "start": None},
    }
    for name, worker in workers.items():
        (tmp_path / name).mkdir()
        record = TrialRecord(name=name, source="search", id=name)
        entry = {"record": record.__dict__, "worker": worker}
        (tmp_path / name / RECORD_FILE).write_text(json.dumps(entry))
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / RECORD_FILE).write_text("{not json")
    (tmp_path / ".half.partial").mkdir()  # being written by someone
    # Half-written by a worker that was killed while saving (SIGKILL, out of memory), and by
    # live ones: only the dead worker's is removed.
    for name, worker in workers.items():
        (tmp_path / f".{name}.partial").mkdir()
        (tmp_path / f".{name}.partial" / WRITER_FILE).write_text(json.dumps(worker))
    assert sorted(e.record.name for e in kept.entries()) == ["dead", "mine"]
    assert not (tmp_path / "damaged").exists() and (tmp_path / ".half.partial").exists()
    left = sorted(p.name for p in tmp_path.glob(".*.partial"))
    assert left == [".half.partial", ".live.partial", ".mine.partial", ".remote.partial"]
    old = time.time() - 2 * ORPHAN_AGE_S  # no writer file, untouched for hours: an orphan
    os.utime(tmp_path / ".half.partial", (old, old))
    list(kept.entries())
    assert not (tmp_path / ".half.partial").exists()
