"""DPO (Rafailov et al. 2023) with TRL's ``DPOTrainer``; IPO and the other pairwise losses are
its ``loss_type``. ``method: sdpo`` is DPO on the stepwise schedule (kept as a method name so
recipes written before the schedule field keep their meaning and their hash)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.align.methods.base import AlignMethod

# TRL 1.x DPO loss types (trl/trainer/dpo_trainer.py, ``_compute_loss``).
LossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]


class DPOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss_type: LossType = Field(default="sigmoid", description="TRL loss; sigmoid = DPO, ipo = IPO.")
    label_smoothing: float = Field(
        default=0.0,
        ge=0.0,
        lt=0.5,
        description="Only for robust / exo_pair; no effect with sigmoid (rejected there).",
    )


class DPO(AlignMethod):
    name = "dpo"
    summary = "DPO (TRL DPOTrainer); loss_type: ipo gives IPO"
    options = DPOOptions
    needs_reference = True
    trl_module = "trl.trainer.dpo_trainer"
    metrics = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

    def trl_classes(self) -> tuple[type, type]:
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer

    def trl_kwargs(self, options: BaseModel) -> dict[str, Any]:
        assert isinstance(options, DPOOptions)
        return {"loss_type": [options.loss_type], "label_smoothing": options.label_smoothing}

    def check(self, config: Any) -> None:
        options = config.options
        if options.label_smoothing and options.loss_type not in ("robust", "exo_pair"):
            raise ValueError(
                f"label_smoothing has no effect with loss_type {options.loss_type!r}; "
                "use robust or exo_pair, or set it to 0"
            )
        if options.loss_type == "exo_pair" and not options.label_smoothing:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (the paper uses 1e-3)")
