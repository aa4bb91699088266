"""Log-probabilities of completions under a model: what orders sDPO's sources by reward
accuracy and picks the model's own preferred wrong option. Tokenised as TRL does."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset


def tokenize_pair(
    tokenizer: Any, prompt: Any, completion: Any, max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) the way TRL's DPO tokenizes them (common-prefix split)."""
    if isinstance(prompt, list):
        prompt_ids = chat_ids(tokenizer, prompt, add_generation_prompt=True)
        full_ids = chat_ids(tokenizer, prompt + completion, add_generation_prompt=False)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token or ""
        text = completion if completion.endswith(eos) else completion + eos
        full_ids = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(prompt_ids), len(full_ids)) and prompt_ids[n] == full_ids[n]:
        n += 1
    ids_prompt, ids_completion = full_ids[:n], full_ids[n:]
    if max_length is not None and len(ids_prompt) + len(ids_completion) > max_length:
        ids_completion = ids_completion[: max(0, max_length - len(ids_prompt))]
    return ids_prompt, ids_completion


def chat_ids(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "conversational preference data needs a tokenizer with a chat template; "
            "this model's tokenizer has none (use standard prompt/chosen/rejected strings)"
        )
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    return list(out)


def completion_logps(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    column: str,
    *,
    max_length: int | None = None,
    batch_size: int = 8,
) -> list[float]:
    """Summed log-probability of ``row[column]`` given ``row["prompt"]``, per row.

    Rows are left-padded (positions counted from each row's first real token), so every
    completion ends at the right edge and the LM head runs only on the last positions of the
    batch (``logits_to_keep``): over a 49k-word vocabulary, the logits of the prompt positions
    were most of the work, and all thrown away.
    """
    import inspect

    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenize_pair(tokenizer, r["prompt"], r[column], max_length) for r in rows]
    keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(len(p) + len(c) for p, c in batch)
            # The completion positions, right-aligned; the first token of a row has no predictor.
            tail = min(max(1, max(len(c) for _, c in batch)), width - 1)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            target = torch.zeros((len(batch), width), dtype=torch.bool)
            for i, (p, c) in enumerate(batch):
                seq = p + c
                ids[i, width - len(seq) :] = torch.tensor(seq)
                mask[i, width - len(seq) :] = 1
                target[i, width - len(c) :] = True
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            extra = {"logits_to_keep": tail + 1} if keeps_logits else {}
            with torch.no_grad():
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    **extra,
                ).logits
            # logits[:, -(tail + 1) + j] predicts token width - tail + j.
            logp = torch.log_softmax(logits[:, -(tail + 1) : -1].float(), dim=-1)
            tok = logp.gather(-1, ids[:, width - tail :].to(device).unsqueeze(-1)).squeeze(-1)
            sums = (tok * target[:, width - tail :].to(device)).sum(dim=1)
            out.extend(float(v) for v in sums.cpu())
    finally:
        model.train(was_training)
    return out


def reward_accuracy(
    model: Any,
    tokenizer: Any,
    dataset: Dataset,
    *,
    sample: int = 64,
    seed: int = 0,
    max_length: int | None = None,
    batch_size: int = 8,
) -> float:
    """Share of pairs (a seeded sample) where ``model`` prefers chosen over rejected.

    This is DPO's implicit-reward accuracy of the starting model against a uniform reference
    (log pi(chosen|x) > log pi(rejected|x)): with the model as its own reference every reward
    is 0, so sDPO's easy -> hard rule needs this reference-free form.
    """
    rows = _rows_with_prompt(dataset, sample, seed)
    chosen = completion_logps(model, tokenizer, rows, "chosen", max_length=max_length, batch_size=batch_size)
    rejected = completion_logps(
        model, tokenizer, rows, "rejected", max_length=max_length, batch_size=batch_size
    )
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / max(1, len(rows))


def _rows_with_prompt(dataset: Dataset, sample: int, seed: int) -> list[dict[str, Any]]:
    from trl.data_utils import extract_prompt

    indices = list(range(len(dataset)))
    if len(indices) > sample:
        indices = sorted(random.Random(seed).sample(indices, sample))
    rows = [dict(dataset[i]) for i in indices]
    return [r if "prompt" in r else {**r, **extract_prompt(r)} for r in rows]
