"""The leaderboard's schema: its tables, and the migrations that bring any earlier file to it.

Tables:
- ``trials``: one row per evaluated model or search trial (recipe, status, timings,
  versions).
- ``scores(trial_id, task, metric, value, stderr, n_samples, num_fewshot, data_source)``:
  one row per lm-eval task (subtasks included) and metric, plus suite aggregates.
- ``suite_scores(trial_id, name, value, stderr, data_source)``: headline numbers (h4, mmlu,
  mmlu_macro, kmmlu, arc_challenge, a search space's own keys, ...); NULL means "no data", never 0.
- ``trial_params(trial_id, name, value, value_text)``: sampled search parameters.
- ``align_steps``, ``samples`` (every question's result), ``summary_parts`` (how headline
  numbers are composed of tasks), ``meta`` (schema version, log id).

The schema version is the last migration's (:data:`MIGRATIONS`).
"""

from __future__ import annotations

from harness.evaluate.suites import board_keys

# Which questions a row's numbers were measured on (harness.evaluate.questions): a study's
# "search" part (what its objective saw) and "heldout" part, or "all" (a plain eval: the split,
# or its first --limit). The leaderboard's columns and paired tests use the board partitions
# only: a number the search optimised on is never ranked.
BOARD_PARTITIONS = ("heldout", "all")

# Headline columns in leaderboard order, defined once with the suites.
SUITE_COLUMNS = tuple(board_keys())

# Version 4 as one idempotent script: files written before migrations were numbered (versions
# 1-3 upgraded themselves with IF NOT EXISTS on every connection) are brought to 4 by it.
_SCHEMA_4 = """
CREATE TABLE IF NOT EXISTS trials (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL,          -- eval | build | search
    status VARCHAR NOT NULL,          -- ok | failed | interrupted
    error VARCHAR,
    model_ref VARCHAR,                -- what was evaluated when there is no recipe
    recipe_yaml VARCHAR,
    recipe_hash VARCHAR,
    merge_method VARCHAR,
    align_method VARCHAR,
    study VARCHAR,
    trial_number INTEGER,
    objective DOUBLE,
    objective_stderr DOUBLE,          -- stderr of a weighted-mean objective (NULL for Pareto)
    objective_weights VARCHAR,        -- JSON {summary key: weight}, weights summing to 1 (NULL for Pareto)
    heldout_objective DOUBLE,         -- the objective on the held-out questions (confirmed trials)
    heldout_objective_stderr DOUBLE,
    fidelity INTEGER,                 -- search questions per task the trial reached (pruned: fewer)
    split_rule VARCHAR,               -- how the study divided search and held-out questions
    reused_from VARCHAR,              -- scores copied from this trial (same recipe hash)
    build_seconds DOUBLE,
    eval_seconds DOUBLE,
    num_parameters BIGINT,
    dtype VARCHAR,
    suites VARCHAR,
    eval_limit INTEGER,
    versions VARCHAR,                 -- JSON
    task_versions VARCHAR,            -- JSON
    harness_commit VARCHAR
);
CREATE TABLE IF NOT EXISTS scores (
    trial_id VARCHAR NOT NULL, task VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    value DOUBLE, stderr DOUBLE, n_samples INTEGER, num_fewshot INTEGER,
    data_source VARCHAR, suite VARCHAR, aggregate BOOLEAN
);
CREATE TABLE IF NOT EXISTS suite_scores (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, stderr DOUBLE, data_source VARCHAR
);
-- Files written by schema 1 (no objective_stderr, no stderr / data_source per headline)
-- gain the columns, NULL.
ALTER TABLE trials ADD COLUMN IF NOT EXISTS objective_stderr DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS objective_weights VARCHAR;
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS stderr DOUBLE;
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS data_source VARCHAR;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS heldout_objective DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS heldout_objective_stderr DOUBLE;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS fidelity INTEGER;
ALTER TABLE trials ADD COLUMN IF NOT EXISTS split_rule VARCHAR;
ALTER TABLE scores ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
ALTER TABLE suite_scores ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
CREATE TABLE IF NOT EXISTS align_steps (
    trial_id VARCHAR NOT NULL, step INTEGER NOT NULL, method VARCHAR, chunk VARCHAR,
    examples INTEGER, train_steps INTEGER, seconds DOUBLE, lora BOOLEAN,
    loss DOUBLE, rewards_chosen DOUBLE, rewards_rejected DOUBLE, rewards_margins DOUBLE,
    rewards_accuracies DOUBLE,
    metrics VARCHAR                   -- JSON: everything TRL logged for this step
);
CREATE TABLE IF NOT EXISTS trial_params (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, value DOUBLE, value_text VARCHAR
);
-- Per-question results (lm-eval's log_samples): one row per trial, task, document and metric.
CREATE TABLE IF NOT EXISTS samples (
    trial_id VARCHAR NOT NULL, task VARCHAR NOT NULL, num_fewshot INTEGER, doc_id INTEGER NOT NULL,
    doc_hash VARCHAR, metric VARCHAR NOT NULL, value DOUBLE, split VARCHAR, "partition" VARCHAR
);
-- How each headline number is made from the samples: sum(weight * mean(value)) over its rows.
CREATE TABLE IF NOT EXISTS summary_parts (
    trial_id VARCHAR NOT NULL, name VARCHAR NOT NULL, task VARCHAR NOT NULL, metric VARCHAR NOT NULL,
    num_fewshot INTEGER, weight DOUBLE NOT NULL
);
ALTER TABLE summary_parts ADD COLUMN IF NOT EXISTS "partition" VARCHAR DEFAULT 'all';
"""

# The leaderboard's schema changes, each applied once, in order, in one transaction with its
# version number (``meta.schema_version``). A change is a new entry here, never an edit of an
# old one: a file at version N gets exactly the entries after N.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (4, _SCHEMA_4),
    # 5: which process wrote a row (host:pid): with many workers, where a trial ran.
    (5, "ALTER TABLE trials ADD COLUMN written_by VARCHAR"),
    # 6: how a score's log-likelihoods were computed: "shared-prefix" or "stock: <why>" (NULL:
    # written before it was recorded, or a row without data).
    (6, "ALTER TABLE scores ADD COLUMN IF NOT EXISTS scoring_path VARCHAR"),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

TRIAL_TABLES = ("trials", "scores", "suite_scores", "trial_params", "align_steps", "samples", "summary_parts")
SCORE_TABLES = ("scores", "suite_scores", "samples", "summary_parts")  # rows per partition
SCORES_WIDTH = 12  # the scores table's width at the current schema (see _write)
SAMPLE_COLUMNS = (
    "trial_id",
    "task",
    "num_fewshot",
    "doc_id",
    "doc_hash",
    "metric",
    "value",
    "split",
    "partition",
)
