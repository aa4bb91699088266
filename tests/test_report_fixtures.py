"""A real leaderboard database for the report tests, written through ``Leaderboard.record``.

Two search studies (slerp/ties with conditional parameters, and a DUS passthrough study),
plain evaluations, a DPO-aligned model with alignment steps, a failed trial, a reused row
and names that try to inject HTML. No mocks: the report reads exactly what the harness
writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.evaluate.results import EvalResult, Score
from harness.record import Leaderboard, TrialRecord

XSS_NAME = "<script>alert(1)</script>"
XSS_ERROR = "RuntimeError: <img src=x onerror=\"document.title='pwned'\"> & more"
ARC_SOURCE = (
    "demo:ai2_arc/ARC-Challenge/validation (validation split instead of test; "
    "few-shot from validation (excluding the question) instead of train)"
)
TQA_NO_DATA = "no data: TruthfulQA is not available offline; pass --data-dir"
MMLU_SUBJECTS = ("anatomy", "astronomy", "virology")
KMMLU_SUBJECTS = ("accounting", "korean_history", "law")


def make_result(
    arc: float,
    hellaswag: float,
    mmlu_micro: float,
    mmlu_macro: float,
    kmmlu: float | None,
    truthfulqa: float | None = None,
    se: float = 0.02,
    limit: int | None = 20,
) -> EvalResult:
    """Scores shaped like the runner's: leaves, groups, macro rows and suite totals."""
    mmlu_src = "demo: 3 subtasks"
    scores = [
        Score("arc_challenge", "acc", arc - 0.03, se, 20, 25, ARC_SOURCE, "h4"),
        Score("arc_challenge", "acc_norm", arc, se, 20, 25, ARC_SOURCE, "h4"),
        Score("hellaswag", "acc_norm", hellaswag, se, 20, 10, "hub:Rowan/hellaswag", "h4"),
        Score("mmlu", "acc", mmlu_micro, se, 60, 5, mmlu_src, "h4", aggregate=True),
        Score(
            "mmlu",
            "acc_macro",
            mmlu_macro,
            se,
            60,
            5,
            mmlu_src + " [unweighted mean over subtasks]",
            "h4",
            aggregate=True,
        ),
    ]
    for i, subject in enumerate(MMLU_SUBJECTS):
        scores.append(
            Score(
                f"mmlu_{subject}",
                "acc",
                mmlu_macro + (i - 1) * 0.05,
                se * 1.7,
                20,
                5,
                f"demo:hails/mmlu_no_train/{subject}",
                "h4",
            )
        )
    scores.append(
        Score(
            "truthfulqa_mc2",
            "acc",
            truthfulqa,
            se if truthfulqa is not None else None,
            20 if truthfulqa is not None else None,
            0,
            "hub:truthful_qa" if truthfulqa is not None else TQA_NO_DATA,
            "h4",
        )
    )
    parts = {
        "arc_challenge": arc,
        "hellaswag": hellaswag,
        "mmlu_macro": mmlu_macro,
        "truthfulqa_mc2": truthfulqa,
    }
    have = [v for v in parts.values() if v is not None]
    h4 = sum(have) / len(have) if truthfulqa is not None else None
    summary: dict[str, float | None] = {
        "arc_challenge": arc,
        "hellaswag": hellaswag,
        "mmlu": mmlu_micro,
        "mmlu_macro": mmlu_macro,
        "truthfulqa_mc2": truthfulqa,
        "h4": h4,
    }
    if truthfulqa is None:
        summary["h4_partial"] = sum(have) / len(have)
        scores.append(
            Score(
                "h4",
                "mean",
                None,
                None,
                None,
                None,
                f"no data: missing parts truthfulqa_mc2 ({TQA_NO_DATA})",
                "h4",
                True,
            )
        )
        scores.append(
            Score(
                "h4_partial",
                "mean",
                summary["h4_partial"],
                None,
                None,
                None,
                "partial: mean of arc_challenge, hellaswag, mmlu_macro; missing truthfulqa_mc2",
                "h4",
                True,
            )
        )
    else:
        scores.append(
            Score(
                "h4",
                "mean",
                h4,
                None,
                None,
                None,
                "mean of arc_challenge, hellaswag, mmlu_macro, truthfulqa_mc2; substitute data for arc_challenge",
                "h4",
                True,
            )
        )
    if kmmlu is not None:
        scores.append(
            Score(
                "kmmlu",
                "acc_macro",
                kmmlu,
                se,
                60,
                5,
                "demo: 3 subtasks [unweighted mean over subtasks]",
                "kmmlu",
                True,
            )
        )
        scores.append(Score("kmmlu", "acc", kmmlu + 0.01, se, 60, 5, "demo: 3 subtasks", "kmmlu", True))
        for i, subject in enumerate(KMMLU_SUBJECTS):
            scores.append(
                Score(
                    f"kmmlu_{subject}",
                    "acc",
                    kmmlu + (1 - i) * 0.04,
                    se * 1.7,
                    20,
                    5,
                    f"demo:HAERAE-HUB/KMMLU/{subject}/test",
                    "kmmlu",
                )
            )
        summary["kmmlu"], summary["kmmlu_micro"] = kmmlu, kmmlu + 0.01
    versions = {s.task: "1.0" for s in scores if not s.aggregate}
    versions["truthfulqa_mc2"] = "3.0"
    return EvalResult(scores, summary, versions, limit=limit, seconds=41.5)


def _recipe(name: str, method: str, params: dict, align: dict | None = None) -> str:
    merge: dict = {
        "merge_method": method,
        "base_model": "demo:smollm2-135m-instruct",
        "models": [{"model": "demo:smollm2-135m-instruct"}, {"model": "demo:smollm2-135m-ko"}],
        "parameters": {k.split(".")[-1]: v for k, v in params.items() if k != "method"},
        "dtype": "float32",
    }
    data: dict = {"name": name, "merge": merge}
    if align:
        data["align"] = align
    return yaml.safe_dump(data, sort_keys=False)


# (trial number, method, params, scores(arc, hellaswag, mmlu micro, mmlu macro, kmmlu, tqa))
SLERP_STUDY = [
    (0, "slerp", {"slerp.parameters.t": 0.2}, (0.42, 0.40, 0.31, 0.30, 0.28, 0.39)),
    (
        1,
        "ties",
        {"ties.parameters.density": 0.5, "ties.parameters.weight": 0.7},
        (0.44, 0.43, 0.33, 0.32, 0.30, 0.41),
    ),
    (2, "slerp", {"slerp.parameters.t": 0.55}, (0.52, 0.47, 0.36, 0.35, 0.33, 0.44)),
    (
        3,
        "ties",
        {"ties.parameters.density": 0.8, "ties.parameters.weight": 0.4},
        (0.49, 0.47, 0.35, 0.35, 0.34, 0.43),
    ),
    (4, "slerp", {"slerp.parameters.t": 0.8}, (0.38, 0.36, 0.28, 0.27, 0.36, 0.37)),
    (
        5,
        "ties",
        {"ties.parameters.density": 0.3, "ties.parameters.weight": 0.9},
        (0.40, 0.41, 0.30, 0.29, 0.27, 0.38),
    ),
]


def build_report_db(path: Path) -> dict[str, str]:
    """Write the fixture database; returns ids by role for the assertions."""
    board = Leaderboard(path)
    ids: dict[str, str] = {}
    study = "ko-en-merge"
    for number, method, params, s in SLERP_STUDY:
        name = f"{study}#{number}-{method}"
        result = make_result(s[0], s[1], s[2], s[3], s[4], s[5])
        trial = TrialRecord(
            name=name,
            source="search",
            study=study,
            trial_number=number,
            merge_method=method,
            recipe_yaml=_recipe(name, method, params),
            recipe_hash=f"hash{number}",
            suites="h4,kmmlu",
            params={"method": method, **params},
            objective=(result.summary["h4"] + s[4]) / 2,
            build_seconds=3.2 + number,
            num_parameters=134_515_008,
            dtype="float32",
        )
        ids[f"{study}#{number}"] = board.record(trial, result)
    # Trial 6 sampled the same recipe as trial 2: its scores are reused, not recomputed.
    reused = TrialRecord(
        name=f"{study}#6-slerp",
        source="search",
        study=study,
        trial_number=6,
        merge_method="slerp",
        recipe_yaml=_recipe(f"{study}#6-slerp", "slerp", {"slerp.parameters.t": 0.55}),
        recipe_hash="hash2",
        suites="h4,kmmlu",
        params={"method": "slerp", "slerp.parameters.t": 0.55},
        objective=(0.52 + 0.47 + 0.35 + 0.44) / 4 / 2 + 0.33 / 2,
    )
    ids["reused"] = board.record_copy(reused, ids[f"{study}#2"])
    ids["failed"] = board.record(
        TrialRecord(
            name=f"{study}#7-ties",
            source="search",
            status="failed",
            error=XSS_ERROR,
            study=study,
            trial_number=7,
            merge_method="ties",
            recipe_yaml=_recipe(f"{study}#7-ties", "ties", {"ties.parameters.density": 0.05}),
            params={
                "method": "ties",
                "ties.parameters.density": 0.05,
                "ties.parameters.weight": 0.1,
            },
        )
    )
    # A second study with a single completed trial: "not enough trials" for importances.
    ids["dus"] = board.record(
        TrialRecord(
            name="dus-48#0-passthrough",
            source="search",
            study="dus-48",
            trial_number=0,
            merge_method="passthrough",
            recipe_yaml=_recipe("dus-48#0-passthrough", "passthrough", {}),
            params={"method": "passthrough", "passthrough.layers": 24},
            objective=0.3,
            num_parameters=201_000_000,
        ),
        make_result(0.35, 0.33, 0.27, 0.26, 0.25, 0.36),
    )
    # Plain evaluations: the base model and a model named to inject a script.
    ids["base"] = board.record(
        TrialRecord(
            name="smollm2-135m-instruct",
            source="eval",
            model_ref="demo:smollm2-135m-instruct",
            num_parameters=134_515_008,
        ),
        make_result(0.45, 0.44, 0.34, 0.33, 0.29, 0.42),
    )
    ids["xss"] = board.record(
        TrialRecord(name=XSS_NAME, source="eval", model_ref="local:/tmp/<evil>"),
        make_result(0.30, 0.30, 0.25, 0.25, 0.22, 0.33),
    )
    # Evaluated without TruthfulQA data and without KMMLU: "no data" and "not evaluated".
    ids["nodata"] = board.record(
        TrialRecord(name="smollm2-360m-instruct", source="eval", model_ref="demo:smollm2-360m"),
        make_result(0.33, 0.31, 0.26, 0.26, None, None),
    )
    # A DPO-aligned merge with two alignment steps (sDPO-style chunks).
    ids["dpo"] = board.record(
        TrialRecord(
            name="slerp-t0.55+sdpo",
            source="build",
            merge_method="slerp",
            align_method="sdpo",
            recipe_yaml=_recipe(
                "slerp-t0.55+sdpo",
                "slerp",
                {"t": 0.55},
                align={
                    "method": "sdpo",
                    "beta": 0.1,
                    "chunks": 2,
                    "dataset": "demo:ultrafeedback-ko",
                },
            ),
            num_parameters=134_515_008,
            align_steps=[
                {
                    "step": 0,
                    "method": "dpo",
                    "chunk": "1/2",
                    "examples": 64,
                    "train_steps": 8,
                    "seconds": 30.5,
                    "lora": True,
                    "loss": 0.69,
                    "rewards_chosen": 0.01,
                    "rewards_rejected": -0.01,
                    "rewards_margins": 0.02,
                    "rewards_accuracies": 0.55,
                    "metrics": {"learning_rate": 5e-6, "grad_norm": 1.3},
                },
                {
                    "step": 1,
                    "method": "dpo",
                    "chunk": "2/2",
                    "examples": 64,
                    "train_steps": 8,
                    "seconds": 31.0,
                    "lora": True,
                    "loss": 0.61,
                    "rewards_chosen": 0.12,
                    "rewards_rejected": -0.15,
                    "rewards_margins": 0.27,
                    "rewards_accuracies": 0.7,
                    "metrics": {"learning_rate": 5e-6, "grad_norm": float("nan")},
                },
            ],
        ),
        make_result(0.515, 0.47, 0.36, 0.35, 0.335, 0.445),
    )
    return ids


@pytest.fixture(scope="session")
def report_db(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("report") / "leaderboard.duckdb"
    return path, build_report_db(path)
