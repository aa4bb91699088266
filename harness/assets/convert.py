"""Turn the demo GGUF into a plain transformers checkpoint (float32 safetensors + tokenizer).

transformers can load a GGUF (it dequantizes on load) but then refuses ``save_pretrained``
because the model carries a quantizer. So: load, copy the config without
``quantization_config``, build a fresh model from it, load the dequantized state dict, save.
The result is checked by reloading it the plain way (no ``gguf_file``) and asking it a
question it must get right.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SANITY_PROMPT = "What is the capital of France?"
SANITY_EXPECT = "Paris"


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """transformers' tqdm bars would flood a log or a rich console; restore the setting after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF dequantizer uses a bare tqdm that ignores that switch; silence it too if present.
    gguf_utils: Any = None
    with contextlib.suppress(ImportError):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if was_enabled:
            hf_logging.enable_progress_bar()


def convert_gguf(gguf_path: Path, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Write a float32 checkpoint of ``gguf_path`` into ``out_dir``; return facts for the record.

    Raises RuntimeError if the saved checkpoint does not reload cleanly or fails the sanity
    question, so the caller never publishes a broken model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
    facts: dict[str, Any] = {"dtype": "float32"}
    with _quiet_progress_bars():
        t0 = time.perf_counter()
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        facts["dequantize_s"] = round(time.perf_counter() - t0, 2)
        log(f"dequantized {gguf_name} in {facts['dequantize_s']:.1f} s")

        t0 = time.perf_counter()
        config_dict = quantized.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = type(quantized.config).from_dict(config_dict)
        # The GGUF's internal run name is not a loadable id; from_pretrained fills in the path.
        config._name_or_path = ""
        tied = bool(getattr(config, "tie_word_embeddings", False))
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = quantized.state_dict()
        model.load_state_dict(state, strict=True)
        model.generation_config = quantized.generation_config
        del quantized
        model.eval()
        if tied and not _is_tied(model):
            raise RuntimeError("tie_word_embeddings is set but lm_head is not tied after loading")
        model.save_pretrained(out_dir)
        # Tokenizer limit = the model's context (the GGUF tokenizer has no limit of its own).
        tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 2048))
        tokenizer.save_pretrained(out_dir)
        facts["save_s"] = round(time.perf_counter() - t0, 2)
        facts["parameters"] = sum(p.numel() for p in model.parameters())
        facts["tie_word_embeddings"] = tied
        if tokenizer.chat_template is None:
            raise RuntimeError(f"{gguf_name} carries no chat template")
        del model

        t0 = time.perf_counter()
        facts["sanity_check"] = _check_saved(out_dir, state, tied)
        facts["check_s"] = round(time.perf_counter() - t0, 2)
    log(f"sanity check: {SANITY_PROMPT!r} -> {facts['sanity_check']['answer']!r}")
    return facts


def _is_tied(model: Any) -> bool:
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and out.weight.data_ptr() == emb.weight.data_ptr()


def _check_saved(out_dir: Path, state: dict[str, Any], tied: bool) -> dict[str, Any]:
    """Reload ``out_dir`` with no gguf involved; same weights, same tying, and it knows Paris."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model: Any = AutoModelForCausalLM.from_pretrained(out_dir)  # transformers' generate() typing is partial
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    if getattr(model.config, "quantization_config", None) is not None:
        raise RuntimeError("saved config still has quantization_config")
    if bool(getattr(model.config, "tie_word_embeddings", False)) != tied or (tied and not _is_tied(model)):
        raise RuntimeError("tie_word_embeddings was not preserved by the conversion")
    reloaded = model.state_dict()
    for key, tensor in state.items():
        if key not in reloaded or not torch.equal(tensor, reloaded[key]):
            raise RuntimeError(f"weight {key} differs after save and reload")

    messages = [{"role": "user", "content": SANITY_PROMPT}]
    inputs: Any = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    answer = str(
        tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    ).strip()
    if SANITY_EXPECT not in answer:
        raise RuntimeError(
            f"converted model failed the sanity check: {SANITY_PROMPT!r} -> {answer!r} "
            f"(expected {SANITY_EXPECT!r})"
        )
    return {"prompt": SANITY_PROMPT, "answer": answer, "expect": SANITY_EXPECT, "passed": True}
