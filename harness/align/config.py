"""The alignment stage's configuration: a preference method, once or stepwise (sDPO),
validated at the door.

This is the ``align`` part of a recipe. It is plain data: which preference data, which
registered method (:mod:`harness.align.methods`: dpo, kto, orpo), how the sDPO steps split the
data, and the TRL hyperparameters (same names, so TRL's documentation applies), plus LoRA or
IA3 through PEFT. Ranges are checked here, so a typo such as ``beta: -1`` or
``learning_rate: 5`` fails before any weights are loaded. Example::

    align:
      method: sdpo                 # dpo | kto | orpo: one run; sdpo = dpo on the sDPO schedule
      # schedule: sdpo             # the same schedule for kto (dpo too); not for orpo
      data:
        - {name: sciq, path: demo:sciq}
        - {name: obqa, path: ./prefs/openbookqa.jsonl, rejected: on_policy}
      steps: 2                     # T (sdpo); default: one step per source
      partition: reward_accuracy   # easy -> hard by the starting model's reward accuracy
      beta: 0.1
      loss_type: ipo               # DPO's own field: IPO
      learning_rate: 5.0e-6
      max_steps: 20                # per sDPO step
      lora: {r: 8, alpha: 16}      # or ia3: {}; omit both for full fine-tuning

Everything that changes the weights is a field here, so it is part of ``Recipe.content_hash()``.
Fields added later default to None (left out of the hash), so older recipes keep theirs.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from harness.align.methods import METHODS, STEPWISE_DPO, AlignMethod, get_method, method_names
from harness.errors import first_error

SchedulerType = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
]
Partition = Literal["reward_accuracy", "random", "as_listed"]

DEFAULT_MAX_NEW_TOKENS = 64  # on-policy answers: the demo's labels are a few words

_SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class PreferenceSource(BaseModel):
    """One preference data source; its ``name`` is the sDPO chunk key."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="A local .jsonl/.json/.parquet file, a save_to_disk folder, "
        "demo:<set> (offline sets built from labelled QA data, see harness.align.demo_sets), "
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


class IA3Spec(BaseModel):
    """IA3 through PEFT (Liu et al. 2022): learned rescaling vectors on attention keys / values
    and the feed-forward input; far fewer parameters than LoRA. Merged back after each step."""

    model_config = ConfigDict(extra="forbid")

    target_modules: list[str] | None = Field(
        default=None,
        description="Modules to rescale; default: PEFT's choice for the architecture "
        "(Llama: k_proj, v_proj, down_proj).",
    )
    feedforward_modules: list[str] | None = Field(
        default=None,
        description="The target modules that are feed-forward layers (their input is rescaled, "
        "not their output); must be among target_modules. Default: PEFT's choice.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> IA3Spec:
        if self.target_modules is not None and not all(self.target_modules):
            raise ValueError("target_modules must name modules")
        if "lm_head" in (self.target_modules or []):
            raise ValueError("lm_head cannot carry an adapter in TRL (it is never trained)")
        if self.feedforward_modules is not None:
            if self.target_modules is None:
                raise ValueError("feedforward_modules needs target_modules (it is a subset of them)")
            stray = sorted(set(self.feedforward_modules) - set(self.target_modules))
            if stray:
                raise ValueError(f"feedforward_modules {stray} are not among target_modules")
        return self


class AlignConfig(BaseModel):
    """Alignment after the merge: a registered preference method (:mod:`harness.align.methods`:
    dpo, kto, orpo), once or on the sDPO schedule (T runs over T chunks, reference = M(t-1)).

    The fields here are every method's; a method's own fields (DPO's ``loss_type``, KTO's
    ``desirable_weight``...) are validated by its ``options`` model and kept beside them, so a
    recipe stays flat and uses TRL's names, and TRL's documentation applies.
    """

    # Extra keys are the method's own fields, validated in _method_fields (never free-form).
    model_config = ConfigDict(extra="allow")

    # > What to run
    method: str = Field(description="A registered method (dpo, kto, orpo); sdpo = dpo on the sDPO schedule.")
    schedule: Literal["sdpo"] | None = Field(
        default=None,
        description="sdpo: T runs, each from the previous one's model as its reference (methods "
        "with a reference only). Unset: one run.",
    )
    data: list[PreferenceSource] = Field(
        min_length=1, description="Preference data sources (TRL preference format)."
    )
    steps: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="T, the number of sDPO steps; default one per source. Must be 1 without sDPO.",
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
        le=100_000,
        description="Pairs per source scored by the starting model to order sources "
        "(partition: reward_accuracy).",
    )

    # > Preference loss (every method has a beta)
    beta: float = Field(
        default=0.1,
        gt=0.0,
        le=100.0,
        description="Deviation from the reference (higher = less); ORPO: the odds-ratio weight.",
    )

    # > Optimisation (TRL configs / transformers.TrainingArguments); per sDPO step
    learning_rate: float = Field(default=1e-6, gt=0.0, lt=1.0, description="Peak AdamW LR.")
    num_train_epochs: float = Field(
        default=1.0, gt=0.0, le=100.0, description="Epochs over each step's chunk."
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="Optimizer steps per run; overrides num_train_epochs.",
    )
    per_device_train_batch_size: int = Field(default=8, ge=1, le=4096)
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=4096)
    warmup_ratio: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Fraction of steps warming up the LR."
    )
    lr_scheduler_type: SchedulerType = "linear"
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1e6)
    max_length: int | None = Field(
        default=512,
        ge=8,
        le=10**6,
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

    # > Parameter-efficient fine-tuning (one adapter at most; none = full fine-tune)
    lora: LoraSpec | None = Field(default=None, description="LoRA via PEFT.")
    ia3: IA3Spec | None = Field(default=None, description="IA3 via PEFT.")

    @field_validator("data", mode="before")
    @classmethod
    def _data_shorthand(cls, value: Any) -> Any:
        # ``data: demo:sciq`` or ``data: [a.jsonl, b.jsonl]`` for the common case.
        if isinstance(value, str | dict):
            value = [value]
        if isinstance(value, list):
            return [{"path": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="before")
    @classmethod
    def _method_fields(cls, data: Any) -> Any:
        """Validate the method's own fields with its options model (defaults filled in, so
        they are part of the recipe's hash); any other unknown key is an error."""
        if not isinstance(data, dict) or not isinstance(data.get("method"), str):
            return data  # pydantic reports the missing or mistyped method
        name = data["method"]
        if name not in method_names():
            raise ValueError(f"unknown method {name!r}: use one of {', '.join(method_names())}")
        data = dict(data)
        if name == "dpo" and data.get("schedule") == STEPWISE_DPO:
            data["method"], data["schedule"] = STEPWISE_DPO, None  # one spelling, one hash
        options_model = get_method(name).options
        own = {k: data.pop(k) for k in list(data) if k not in cls.model_fields}
        stray = sorted(k for k in own if k not in options_model.model_fields)
        if stray:
            raise ValueError(
                f"unknown field {stray[0]!r} for method {name!r} (its own fields: "
                f"{', '.join(options_model.model_fields) or 'none'})"
            )
        try:
            options = options_model.model_validate(own)
        except ValidationError as err:
            raise ValueError(first_error(err)) from None
        return {**data, **options.model_dump()}

    @model_validator(mode="after")
    def _consistent(self) -> AlignConfig:
        names = [str(s.name) for s in self.data]  # set by PreferenceSource's own validator
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data source names must be unique (repeated: {', '.join(dupes)})")
        if self.method == STEPWISE_DPO and self.schedule is not None:
            raise ValueError("method sdpo is already DPO on the sDPO schedule: drop schedule")
        if not self.stepwise and self.steps not in (None, 1):
            raise ValueError("steps (T) applies to the sdpo schedule; without it there is one step")
        if self.lora is not None and self.ia3 is not None:
            raise ValueError("one adapter at most: lora or ia3, not both")
        self.trainer.check(self)
        return self

    @property
    def trainer(self) -> AlignMethod:
        """The registered method that trains each step."""
        return get_method(self.method)

    @property
    def options(self) -> BaseModel:
        """The method's own fields, as its options model."""
        return self.trainer.options.model_validate(self.model_extra or {})

    @property
    def stepwise(self) -> bool:
        """On the sDPO schedule (``method: sdpo``, or ``schedule: sdpo``)."""
        return self.method == STEPWISE_DPO or self.schedule == STEPWISE_DPO

    @property
    def num_steps(self) -> int:
        """T: the number of runs (1 without sDPO; with it, default one per source)."""
        if not self.stepwise:
            return 1
        return self.steps or len(self.data)

    @property
    def adapter(self) -> LoraSpec | IA3Spec | None:
        return self.lora or self.ia3

    @property
    def uses_lora(self) -> bool:
        return self.lora is not None

    def trl_kwargs(self) -> dict[str, Any]:
        """The TRL config fields this config sets (the caller adds I/O and device ones)."""
        kwargs: dict[str, Any] = {
            "beta": self.beta,
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
        }
        if self.trainer.needs_reference:
            kwargs["precompute_ref_log_probs"] = self.precompute_ref_log_probs
        kwargs.update(self.trainer.trl_kwargs(self.options))
        return kwargs


def parameter_ranges(method: str | None = None) -> dict[str, tuple[float, float]]:
    """The legal range of each numeric align parameter, read from the fields' constraints (the
    common fields, LoRA's, and ``method``'s own; every method's when None): what a search
    space's ``{float: [low, high]}`` over ``align.<name>`` must stay inside. Open bounds are
    moved just inside (``beta > 0`` gives 1e-9)."""
    models: list[type[BaseModel]] = [AlignConfig, LoraSpec]
    models += (
        [get_method(method).options] if method in method_names() else [m.options for m in METHODS.values()]
    )
    ranges: dict[str, tuple[float, float]] = {}
    for model in models:
        for name, info in model.model_fields.items():
            bounds = _field_bounds(info)
            if bounds is not None:
                ranges[name] = bounds
    return ranges


def _field_bounds(info: FieldInfo) -> tuple[float, float] | None:
    integer = _base_type(info.annotation) is int
    if not integer and _base_type(info.annotation) is not float:
        return None
    kind = int if integer else float
    low: float | None = None
    high: float | None = None
    for item in info.metadata:  # the bounds of numeric fields are numbers
        if isinstance(item, annotated_types.Ge):
            low = kind(cast(float, item.ge))
        elif isinstance(item, annotated_types.Gt):
            low = kind(cast(float, item.gt)) + (1 if integer else 1e-9)
        elif isinstance(item, annotated_types.Le):
            high = kind(cast(float, item.le))
        elif isinstance(item, annotated_types.Lt):
            high = kind(cast(float, item.lt)) - (1 if integer else 1e-6)
    if low is None or high is None:
        return None  # unbounded (seed): no range to check
    return (low, high)


def _base_type(annotation: Any) -> Any:
    """int for ``int`` and ``int | None``; float likewise; else the annotation."""
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 else annotation
