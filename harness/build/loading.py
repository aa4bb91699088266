"""Loading a model reference (demo: name, local path or hub id) for evaluation."""

from __future__ import annotations

from typing import Any

from harness.errors import HarnessError


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
    try:
        return getattr(torch, dtype)
    except AttributeError:
        raise HarnessError(f"unknown dtype {dtype!r}", "use auto, float32, bfloat16 or float16") from None


def load_pretrained(ref: str, *, device: str | None = None, dtype: str = "auto") -> tuple[Any, Any, str]:
    """Return (model, tokenizer, resolved path) for a model reference, ready for evaluation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.assets import resolve_model
    from harness.assets.checkpoint import check_weights, load_model_config
    from harness.evaluate.transformers_compat import weight_bars_off

    path = resolve_model(ref)
    load_model_config(ref, path, "")
    check_weights(ref, path)
    device = pick_device(device)
    with weight_bars_off():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=pick_dtype(dtype, device))
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, path


def model_facts(model: Any) -> tuple[int, str]:
    """(parameter count, dtype name such as "float32") of a loaded model, as recorded."""
    first = next(model.parameters())
    return sum(p.numel() for p in model.parameters()), str(first.dtype).removeprefix("torch.")
