"""Where a run computes, decided once: the device and the dtype rule every stage follows.

A search merges, aligns and scores many models, and compares them with reference models
loaded from disk. If one stage followed ``--device`` and another fell back to its own default,
one study would mix devices (and dtypes) by accident: trials merged on the GPU but scored on
the CPU, references on the GPU while trials sat on the CPU. So the decision is made here, once
per run (:func:`pick_device`: ``--device``, else CUDA when visible, else the CPU), and the
resulting :class:`Placement` is handed to every stage: the merge's math, the merged model's
skeleton, alignment, scoring, reference models, confirmations and nightly re-scores.

The dtype rule is the same everywhere: ``auto`` is bfloat16 on a GPU that supports it and
float32 elsewhere (bfloat16 matmuls are slow on CPUs); a named dtype is used as is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

log = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_device(device: str | None) -> None:
    """Refuse a device torch does not know, or one this machine does not have (exit 2)."""
    if not device:
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise HarnessError(f"unknown device {device!r}", "use cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise HarnessError(f"--device {device}: no CUDA GPU is visible here", "use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise HarnessError(
                f"--device {device}: only {count} CUDA GPU(s) are visible", f"use cuda:0..{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise HarnessError(f"--device {device}: MPS is not available here", "use --device cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise HarnessError(
            f"--device {device}: {parsed.type} is not supported", "use cpu, cuda, cuda:N or mps"
        )


def pick_device(device: str | None = None) -> str:
    """``device`` when given (checked), else ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device:
        check_device(device)
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on GPUs that support it, float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    found = getattr(torch, dtype, None) if dtype in DTYPES else None
    if not isinstance(found, torch.dtype):
        raise HarnessError(f"unknown dtype {dtype!r}", "use auto, float32, bfloat16 or float16")
    return found


def load_onto(device: str) -> dict[str, Any]:
    """``from_pretrained`` keywords that load a checkpoint straight onto ``device`` (no full
    copy in host memory first); none for the CPU, where it loads anyway."""
    return {} if device == "cpu" else {"device_map": device}


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name recipes, mergekit and records use)."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Placement:
    """One run's device and dtype rule (see the module's docstring)."""

    device: str = "cpu"
    dtype: str = "auto"  # the rule: auto | float32 | bfloat16 | float16

    @classmethod
    def decide(cls, device: str | None = None, dtype: str = "auto") -> Placement:
        """The run's decision: ``device`` checked (or picked), ``dtype`` checked."""
        chosen = pick_device(device)
        pick_dtype(dtype, chosen)  # bad names fail here, before anything is loaded
        return cls(device=chosen, dtype=dtype)

    @property
    def torch_dtype(self) -> Any:
        return pick_dtype(self.dtype, self.device)

    @property
    def dtype_name(self) -> str:
        """The concrete dtype the rule gives on this device ("bfloat16", "float32", ...)."""
        return dtype_name(self.torch_dtype)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def describe(self) -> str:
        """``cuda:0 (NVIDIA H200), bfloat16`` / ``cpu, float32``: the console's first line."""
        where = self.device
        if self.is_cuda:
            import torch

            where = f"{self.device} ({torch.cuda.get_device_name(torch.device(self.device))})"
        return f"{where}, {self.dtype_name}" + (" (auto)" if self.dtype == "auto" else "")

    def bring(self, model: Any, stage: str) -> None:
        """Move a model that reached ``stage`` off this run's device there, and say so: a stage
        ignored the decision (a bug, or remote code), and computing silently elsewhere would
        mix devices in one study."""
        off = strays(model, self.device)
        if off:
            log.warning(
                "a model reached %s off the run's device %s (%s): moved there",
                stage,
                self.device,
                ", ".join(off[:2]),
            )
            model.to(self.device)


def strays(model: Any, device: str) -> list[str]:
    """Names of ``model``'s parameters and buffers that are not on ``device`` (first few)."""
    import torch

    want = torch.device(device)
    out: list[str] = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not same_device(tensor.device, want):
            out.append(f"{name} on {tensor.device}")
            if len(out) == 5:
                break
    return out


def same_device(have: Any, want: Any) -> bool:
    """``cuda`` and ``cuda:N`` are the same device when N is the current one."""
    if have.type != want.type:
        return False
    if have.type != "cuda" or have.index == want.index:
        return True
    import torch

    current = torch.cuda.current_device()
    return bool(
        (current if have.index is None else have.index) == (current if want.index is None else want.index)
    )
