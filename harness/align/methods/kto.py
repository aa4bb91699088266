"""KTO (Ethayarajh et al. 2024) with TRL's ``KTOTrainer``: unpaired data, each answer only
labelled desirable or not. Preference pairs give one of each (chosen: desirable, rejected:
undesirable); KTO-format sources (prompt / completion / label) are read as they are."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness.align.methods.base import AlignMethod


class KTOOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        default="kto", description="kto: the paper's loss; apo_zero_unpaired: APO-zero without the KL term."
    )
    desirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the desirable answers' losses."
    )
    undesirable_weight: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Weight of the undesirable answers' losses."
    )


class KTO(AlignMethod):
    name = "kto"
    summary = "KTO (TRL KTOTrainer): unpaired desirable / undesirable answers"
    options = KTOOptions
    needs_reference = True
    trl_module = "trl.trainer.kto_trainer"
    metrics = ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl")

    def trl_classes(self) -> tuple[type, type]:
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer

    def train_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each pair as two unpaired examples, desirable then undesirable, in pair order (KTO's
        KL estimate pairs each answer with its batch neighbour's prompt: a fixed order)."""
        out: list[dict[str, Any]] = []
        for row in rows:
            if "completion" in row and "label" in row:  # KTO format already
                out.append(
                    {"prompt": row["prompt"], "completion": row["completion"], "label": bool(row["label"])}
                )
                continue
            out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
            out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
        return out

    def check(self, config: Any) -> None:
        if config.options.loss_type == "kto" and config.per_device_train_batch_size < 2:
            raise ValueError(
                "kto estimates its KL term from the other answers of a batch: "
                "per_device_train_batch_size must be >= 2 (or loss_type apo_zero_unpaired)"
            )
