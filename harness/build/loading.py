"""Loading a model reference (demo: name, local path or hub id) for evaluation."""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on GPUs that support it, float32 on CPU (bf16 matmuls are slow there)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise HarnessError(f"unknown dtype {dtype!r}", "use auto, float32, bfloat16 or float16") from None


def load_pretrained(ref: str, *, device: str | None = None, dtype: str = "auto") -> tuple[Any, Any, str]:
    """Return (model, tokenizer, resolved path) for a model reference, ready for evaluation."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from harness.assets import resolve_model

    path = resolve_model(ref)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise HarnessError(
            f"model {ref!r} could not be found ({type(err).__name__})",
            "pass an existing local path, a demo: name (run `harness assets`), or a hub id in the HF cache",
        ) from None
    device = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, path


def model_facts(model: Any) -> tuple[int, str]:
    """(parameter count, dtype name such as "float32") of a loaded model, as recorded."""
    first = next(model.parameters())
    return sum(p.numel() for p in model.parameters()), str(first.dtype).removeprefix("torch.")
