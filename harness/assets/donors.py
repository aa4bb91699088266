"""The demo's DPO-made donors, as data: which base, which alignment, which seed.

These are facts about the demo (like :mod:`harness.assets.pins`), read by the model registry
(a ``demo:`` reference to a donor not built yet gets its own message) and by the alignment
stage, which builds them (:mod:`harness.align.donors`). Keeping them here lets dependencies
run one way: the alignment stage uses the assets, the assets never import the stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.align.config import AlignConfig

BASE_MODEL = "demo:smollm2-135m-instruct"

# Budget (2 CPU cores, fp32, full fine-tune): one optimizer step at batch 8 (16 sequences of
# ~70-85 tokens with the chat template, plus the reference forward) costs ~12 s on an idle
# machine. 16 steps per donor (8.5 min for both, was 30 steps and ~26 min): the science donor's
# SciQ margin reaches 0.55 by step 8, and its measured effect on ARC-Easy is in the README.
# The learning rate is far above the usual DPO 5e-7..5e-6 on purpose: at 2e-5 30 steps
# changed the weights by 0.04% (relative L2) and the donors stayed the base model.
_COMMON: dict[str, Any] = {
    "beta": 0.1,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 8,
    "max_length": 128,
    "warmup_ratio": 0.1,
    "lr_scheduler_type": "linear",
}


@dataclass(frozen=True)
class DonorSpec:
    """One demo donor: the base model, the alignment that makes it, a seed."""

    name: str
    description: str
    align: dict[str, Any]
    base: str = BASE_MODEL
    seed: int = 0

    def config(self) -> AlignConfig:
        return AlignConfig.model_validate(self.align)

    def spec_hash(self) -> str:
        blob = json.dumps(
            {
                "base": self.base,
                "seed": self.seed,
                "align": self.config().model_dump(exclude_none=True),
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


DEMO_DONORS: dict[str, DonorSpec] = {
    "smollm2-135m-dpo-science": DonorSpec(
        name="smollm2-135m-dpo-science",
        description="SmolLM2-135M-Instruct + sDPO (T=2) on SciQ and OpenBookQA seed-recipe pairs",
        align={
            "method": "sdpo",
            "data": [
                {"name": "sciq", "path": "demo:sciq"},
                {"name": "openbookqa", "path": "demo:openbookqa"},
            ],
            "steps": 2,
            "partition": "reward_accuracy",
            "difficulty_sample": 32,  # pairs per source scored to order them easy -> hard
            "max_steps": 8,  # per sDPO step
            **_COMMON,
        },
    ),
    "smollm2-135m-dpo-commonsense": DonorSpec(
        name="smollm2-135m-dpo-commonsense",
        description="SmolLM2-135M-Instruct + DPO on PIQA, Social-IQA and CommonsenseQA seed-recipe pairs",
        align={
            "method": "dpo",
            "data": [
                {"name": "piqa", "path": "demo:piqa"},
                {"name": "social_iqa", "path": "demo:social_iqa"},
                {"name": "commonsense_qa", "path": "demo:commonsense_qa"},
            ],
            "max_steps": 16,
            **_COMMON,
        },
    ),
}
