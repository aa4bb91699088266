"""The alignment stage's configuration: DPO or stepwise DPO (sDPO), validated at the door.

This is the ``align`` part of a recipe. It is plain data: which preference data, how the sDPO
steps split it, and the TRL ``DPOConfig`` hyperparameters (same names, so TRL's documentation
applies), plus LoRA through PEFT. Ranges are checked here, so a typo such as ``beta: -1`` or
``learning_rate: 5`` fails before any weights are loaded. Example::

    align:
      method: sdpo                 # dpo: one run; sdpo: one DPO run per chunk, reference = M(t-1)
      data:
        - {name: sciq, path: demo:sciq}
        - {name: obqa, path: ./prefs/openbookqa.jsonl}
      steps: 2                     # T (sdpo); default: one step per source
      partition: reward_accuracy   # easy -> hard by the starting model's reward accuracy
      beta: 0.1
      learning_rate: 5.0e-6
      max_steps: 20                # per sDPO step
      lora: {r: 8, alpha: 16}      # omit for full fine-tuning

Everything that changes the weights is a field here, so it is part of ``Recipe.content_hash()``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
SchedulerType = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
Partition = Literal["reward_accuracy", "random", "as_listed"]

# Legal range of each numeric align parameter, for search spaces that sample them (a
# ``{float: [low, high]}`` over ``align.beta`` must stay inside these). Open bounds (beta > 0)
# are written as a tiny positive number.
ALIGN_PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "beta": (1e-9, 100.0),
    "learning_rate": (1e-12, 0.999999),
    "num_train_epochs": (1e-9, 100.0),
    "max_steps": (1, 10**9),
    "steps": (1, 64),
    "warmup_ratio": (0.0, 0.999999),
    "label_smoothing": (0.0, 0.499999),
    "weight_decay": (0.0, 0.999999),
    "per_device_train_batch_size": (1, 4096),
    "gradient_accumulation_steps": (1, 4096),
    "r": (1, 1024),
    "alpha": (1e-9, 1e9),
    "dropout": (0.0, 0.999999),
}

DEFAULT_MAX_NEW_TOKENS = 64  # on-policy answers: the demo's labels are a few words

_SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class PreferenceSource(BaseModel):
    """One preference data source; its ``name`` is the sDPO chunk key."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="A local .jsonl/.json/.parquet file, a save_to_disk folder, "
        "demo:<set> (offline sets built from labelled QA data, see harness.align.data), "
        "or a hub dataset id (must be in the local HF cache when offline)."
    )
    name: str | None = Field(
        default=None, description="Chunk key in records and sDPO partitions; default from path."
    )
    split: str = Field(default="train", description="Split of a hub dataset or folder.")
    limit: int | None = Field(
        default=None, ge=1, description="Use only the first N pairs (after de-duplication)."
    )
    # None (the default) keeps the data's own ``rejected``: both default to None so that
    # recipes written before these fields keep their content hash.
    rejected: Literal["on_policy"] | None = Field(
        default=None,
        description="on_policy: the seed recipe's rule for data without preference labels: the "
        "starting model of the alignment step answers each prompt (greedy) and its answer is "
        "'rejected', the data's label ('chosen') stays; answers equal to the label are dropped.",
    )
    max_new_tokens: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=f"Longest on-policy answer in tokens (rejected: on_policy only; default "
        f"{DEFAULT_MAX_NEW_TOKENS}).",
    )

    @model_validator(mode="after")
    def _default_name(self) -> PreferenceSource:
        if self.max_new_tokens is not None and self.rejected != "on_policy":
            raise ValueError("max_new_tokens applies to rejected: on_policy only")
        if self.name is None:
            stem = self.path.removeprefix("demo:").rstrip("/").split("/")[-1]
            self.name = re.sub(r"\.(jsonl|json|parquet)$", "", stem) or "data"
        if not _SOURCE_NAME_RE.match(self.name):
            raise ValueError(f"source name {self.name!r} must use letters, digits, '.', '_', '+' or '-'")
        return self


class LoraSpec(BaseModel):
    """LoRA through PEFT; the adapter is merged back after each step (the result is a plain model)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=8, ge=1, le=1024, description="Rank of the update matrices.")
    alpha: float = Field(default=16.0, gt=0, description="Scaling: the update is alpha / r.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | str = Field(
        default="all-linear",
        description="Module names (or a regex string) to adapt; 'all-linear' = every linear "
        "layer except the LM head (TRL cannot train an adapter on lm_head).",
    )

    @field_validator("target_modules")
    @classmethod
    def _no_lm_head(cls, value: list[str] | str) -> list[str] | str:
        names = [value] if isinstance(value, str) else value
        if not names or any(not n for n in names):
            raise ValueError("target_modules must name at least one module")
        if "lm_head" in names:
            raise ValueError("lm_head cannot carry a LoRA adapter in TRL's DPO (it is never trained)")
        return value


class AlignConfig(BaseModel):
    """Alignment after the merge: DPO, or sDPO (T DPO runs over T chunks, reference = M(t-1)).

    Parameters mirror ``trl.DPOConfig`` (same names and meaning) so TRL's documentation applies.
    """

    model_config = ConfigDict(extra="forbid")

    # > What to run
    method: Literal["dpo", "sdpo"] = Field(description="dpo: one run; sdpo: stepwise DPO.")
    data: list[PreferenceSource] = Field(
        min_length=1, description="Preference data sources (TRL preference format)."
    )
    steps: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="T, the number of sDPO steps; default one per source. Must be 1 for dpo.",
    )
    partition: Partition = Field(
        default="reward_accuracy",
        description="How sDPO splits the data into T chunks: reward_accuracy = by source, "
        "easy -> hard by the starting model's reward accuracy on each (the sDPO paper's rule); "
        "as_listed = by source in the listed order; random = a seeded random split of all pairs.",
    )
    difficulty_sample: int = Field(
        default=64,
        ge=1,
        description="Pairs per source scored by the starting model to order sources "
        "(partition: reward_accuracy).",
    )

    # > DPO loss (trl.DPOConfig)
    beta: float = Field(
        default=0.1, gt=0.0, le=100.0, description="Deviation from the reference (higher = less)."
    )
    loss_type: LossType = Field(default="sigmoid", description="TRL loss; sigmoid = DPO.")
    label_smoothing: float = Field(
        default=0.0,
        ge=0.0,
        lt=0.5,
        description="Only for robust / exo_pair; no effect with sigmoid (rejected there).",
    )

    # > Optimisation (trl.DPOConfig / transformers.TrainingArguments); per sDPO step
    learning_rate: float = Field(default=1e-6, gt=0.0, lt=1.0, description="Peak AdamW LR.")
    num_train_epochs: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Epochs over each step's chunk."
    )
    max_steps: int | None = Field(
        default=None, ge=1, description="Optimizer steps per DPO run; overrides num_train_epochs."
    )
    per_device_train_batch_size: int = Field(default=8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    warmup_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Fraction of steps warming up the LR."
    )
    lr_scheduler_type: SchedulerType = "linear"
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    max_length: int | None = Field(
        default=512,
        ge=8,
        description="Truncate prompt+completion to this many tokens (None: no truncation).",
    )
    seed: int | None = Field(
        default=None, description="Training / partition seed; default: the recipe's seed."
    )

    # > Memory and speed (do not change the objective)
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in backward: less memory, ~20-30% slower.",
    )
    precompute_ref_log_probs: bool = Field(
        default=False,
        description="Score each chunk with the reference once, then free it (full fine-tuning "
        "then holds one model copy instead of two).",
    )

    # > Parameter-efficient fine-tuning
    lora: LoraSpec | None = Field(default=None, description="LoRA via PEFT; None = full fine-tune.")

    @field_validator("data", mode="before")
    @classmethod
    def _data_shorthand(cls, value: Any) -> Any:
        # ``data: demo:sciq`` or ``data: [a.jsonl, b.jsonl]`` for the common case.
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlignConfig:
        names = [s.name for s in self.data]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data source names must be unique (repeated: {', '.join(dupes)})")
        if self.method == "dpo" and self.steps not in (None, 1):
            raise ValueError("steps (T) applies to method sdpo; dpo is one step")
        if self.label_smoothing and self.loss_type not in ("robust", "exo_pair"):
            raise ValueError(
                f"label_smoothing has no effect with loss_type {self.loss_type!r}; "
                "use robust or exo_pair, or set it to 0"
            )
        if self.loss_type == "exo_pair" and not self.label_smoothing:
            raise ValueError("loss_type exo_pair needs label_smoothing > 0 (the paper uses 1e-3)")
        return self

    @property
    def num_steps(self) -> int:
        """T: the number of DPO runs (1 for dpo; for sdpo default one per source)."""
        if self.method == "dpo":
            return 1
        return self.steps or len(self.data)

    @property
    def uses_lora(self) -> bool:
        return self.lora is not None

    def trl_kwargs(self) -> dict[str, Any]:
        """The ``trl.DPOConfig`` fields this config sets (the caller adds I/O and device ones)."""
        kwargs: dict[str, Any] = {
            "beta": self.beta,
            "loss_type": [self.loss_type],
            "label_smoothing": self.label_smoothing,
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps if self.max_steps is not None else -1,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            # transformers 5 dropped ``warmup_ratio``: a float in [0, 1) is read as a ratio.
            "warmup_steps": self.warmup_ratio,
            "lr_scheduler_type": self.lr_scheduler_type,
            "weight_decay": self.weight_decay,
            "max_grad_norm": self.max_grad_norm,
            "max_length": self.max_length,
            "gradient_checkpointing": self.gradient_checkpointing,
            "precompute_ref_log_probs": self.precompute_ref_log_probs,
        }
        return kwargs
