"""ORPO (Hong et al. 2024) with TRL's experimental ``ORPOTrainer``: supervised loss plus an
odds-ratio penalty, no reference model (so no sDPO schedule). ``beta`` is the paper's
lambda."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.align.methods.base import AlignMethod


class ORPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ORPO(AlignMethod):
    name = "orpo"
    summary = "ORPO (TRL experimental ORPOTrainer): no reference model; beta is lambda"
    options = ORPOOptions
    needs_reference = False
    trl_module = "trl.experimental.orpo.orpo_trainer"
    metrics = (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "nll_loss",
        "log_odds_ratio",
    )

    def trl_classes(self) -> tuple[type, type]:
        from harness.align.trl_compat import orpo_classes

        return orpo_classes()

    def check(self, config: Any) -> None:
        if config.stepwise:
            raise ValueError(
                "orpo trains without a reference model, and sDPO steps each start from the "
                "previous step's model as reference: use method dpo or kto with schedule: sdpo, "
                "or drop the schedule"
            )
        if config.precompute_ref_log_probs:
            raise ValueError("orpo has no reference model: drop precompute_ref_log_probs")
