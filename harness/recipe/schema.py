"""The recipe schema: configuration is data, validated at the door.

A recipe is a YAML document with a ``merge`` part that is a *plain mergekit
configuration* (what people paste from model cards) and an optional ``align`` part
(the alignment stage: DPO / sDPO). A bare mergekit configuration is also accepted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from harness.align.config import AlignConfig


class AlignSpec(AlignConfig):
    """Alignment stage after the merge (DPO or stepwise DPO): :class:`harness.align.AlignConfig`.

    Validated field by field at the door (ranges, names, LoRA); the data checks that need files
    run in :func:`harness.recipe.resolve_recipe`, the training in ``harness.align.trainer``.
    Every field is dumped into :meth:`Recipe.canonical`, so all of them enter the hash.
    """


class Recipe(BaseModel):
    """One model to build: a mergekit merge, optionally followed by alignment."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="Display name on the leaderboard.")
    merge: dict[str, Any] = Field(description="A plain mergekit configuration.")
    align: AlignSpec | None = None
    seed: int = Field(default=0, description="Seeds random merge methods (DARE, DELLA) and training.")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.canonical(), sort_keys=False, allow_unicode=True)

    def canonical(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        data["merge"] = self.merge
        if self.align is not None:
            data["align"] = self.align.model_dump(exclude_none=True)
        if self.seed:
            data["seed"] = self.seed
        return data

    def content_hash(self) -> str:
        """Hash of what determines the weights (not the display name).

        Two recipes with the same hash build the same model, so a search never
        builds or scores it twice.
        """
        data = self.canonical()
        data.pop("name", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def display_name(self) -> str:
        return self.name or f"{self.merge.get('merge_method', 'merge')}-{self.content_hash()[:8]}"
