"""Loading a model reference (demo: name, local path or hub id) for evaluation."""

from __future__ import annotations

from typing import Any

from harness.placement import load_onto, pick_device, pick_dtype


def load_pretrained(ref: str, *, device: str | None = None, dtype: str = "auto") -> tuple[Any, Any, str]:
    """Return (model, tokenizer, resolved path) for a model reference, ready for evaluation:
    loaded straight onto ``device`` (the run's, :mod:`harness.placement`) in the dtype the rule
    gives there, never through a full copy in host memory first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.assets import resolve_model
    from harness.assets.checkpoint import check_weights, load_model_config
    from harness.evaluate.transformers_compat import weight_bars_off

    path = resolve_model(ref)
    load_model_config(ref, path, "")
    check_weights(ref, path)
    device = pick_device(device)
    with weight_bars_off():
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=pick_dtype(dtype, device), **load_onto(device)
        )
    model.to(device)  # type: ignore[arg-type]  # (typed as a model method wrapper) a no-op where device_map put it; moves remote code that ignored it
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer, path


def model_facts(model: Any) -> tuple[int, str]:
    """(parameter count, dtype name such as "float32") of a loaded model, as recorded."""
    first = next(model.parameters())
    return sum(p.numel() for p in model.parameters()), str(first.dtype).removeprefix("torch.")
