"""On-policy rejected answers: the seed recipe for data that has a label but no ``rejected``.

A preference source with ``rejected: on_policy`` keeps its label as ``chosen``; the starting
model of the alignment step answers each prompt greedily and that answer becomes ``rejected``.
DPO then pushes the model away from what it actually says and towards the label, instead of
away from a distractor it may never produce. An answer equal to the label (after
:func:`normalize_answer`) is no preference and is dropped, and so is an empty one.

Generation is the slow part (one decode per prompt), so answers are cached on disk under
``<home>/generations``, keyed by what decides them: the weights (:func:`model_fingerprint`),
the prompt's token ids and the settings (``max_new_tokens``, the tokenizer, the model config
and its generation config). A rerun of the same build generates nothing.

Not in the key: the device and the batch size. Greedy decoding on another device (or in
another batch, where the padding differs) can differ in the last bits of a logit, and so,
rarely, in a token; a cached answer is reused as it is, which keeps a rebuild reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.assets.fsutil import atomic_write_json, read_json
from harness.errors import HarnessError
from harness.paths import harness_home

# Bump when the way answers are produced changes (prompt encoding, decoding, stopping):
# answers cached by another version are then not reused.
GENERATION_VERSION = 1
_HASH_CHUNK_BYTES = 64 << 20  # at most this much of a tensor is copied to the host at once
# Config fields that change without changing what the model computes (a training loop turns
# use_cache off, a save sets the path): left out of the settings key so they do not miss.
_VOLATILE_CONFIG_KEYS = frozenset(
    {"_name_or_path", "transformers_version", "use_cache", "_commit_hash", "_attn_implementation_autoset"}
)
_TRAILING_PUNCTUATION = ".!?,;:。！？…"
_SPACES_RE = re.compile(r"\s+")


@dataclass
class OnPolicyStats:
    """What :func:`on_policy_pairs` did, for the training record.

    ``rows`` = ``pairs + dropped_equal + dropped_empty``; ``prompts`` counts distinct prompts
    (rows that share a prompt share one answer), ``prompts = generated + cached``.
    """

    rows: int = 0
    prompts: int = 0
    pairs: int = 0
    dropped_equal: int = 0  # the answer was the label: no preference to learn
    dropped_empty: int = 0  # the model said nothing (eos first, or only whitespace)
    generated: int = 0  # prompts decoded by this call
    cached: int = 0  # prompts whose answer came from the cache
    seconds: float = 0.0  # wall time, fingerprinting and cache I/O included

    def as_record(self) -> dict[str, Any]:
        """JSON-able, for the training record."""
        record = asdict(self)
        record["seconds"] = round(self.seconds, 3)
        return record


class GenerationCache:
    """Greedy answers on disk: one JSON file per (model fingerprint, settings).

    Each file maps a prompt key (a hash of the prompt's token ids) to the decoded answer. Writes
    go to a temporary file renamed over the old one, so a reader sees the old file or the new
    one, never half of one; two processes writing the same file merge what was on disk when
    they write, and the last rename wins (an answer lost that way is generated again next
    time). A file that does not parse, or that belongs to other weights or settings, reads as
    empty and is overwritten by the next store.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else harness_home() / "generations"

    def path(self, model_key: str, settings_key: str) -> Path:
        return self.root / f"{model_key[:32]}-{settings_key[:16]}.json"

    def load(self, model_key: str, settings_key: str) -> dict[str, str]:
        """The cached answers (prompt key -> answer); empty when missing, corrupt or foreign."""
        data = read_json(self.path(model_key, settings_key))
        answers = data.get("answers")
        if data.get("model") != model_key or data.get("settings_key") != settings_key:
            return {}
        if not isinstance(answers, dict):
            return {}
        return {k: v for k, v in answers.items() if isinstance(k, str) and isinstance(v, str)}

    def store(
        self, model_key: str, settings_key: str, settings: dict[str, Any], answers: dict[str, str]
    ) -> None:
        """Add ``answers`` to the file (merged with what is on disk now), atomically."""
        merged = {**self.load(model_key, settings_key), **answers}
        payload = {
            "version": GENERATION_VERSION,
            "model": model_key,
            "settings_key": settings_key,
            "settings": settings,
            "answers": merged,
        }
        atomic_write_json(self.path(model_key, settings_key), payload)


def model_fingerprint(model: Any) -> str:
    """sha256 of every parameter and buffer: names, dtypes, shapes and bytes (hex).

    Two models with this fingerprint compute the same function given the same config, however
    they were made (loaded, merged, trained in memory): that is what keys cached answers. Each
    tensor is copied to the host in chunks of at most 64 MiB, so the extra memory stays small
    on a GPU. Cost: one pass over the weights at sha256's ~1.8 GB/s on one CPU core, plus the
    device-to-host copy. Measured on a 2-core CPU machine: the tests' tiny Llama (58k
    parameters) 0.5 ms; a random 112M-parameter Llama 0.25 s in float32 (448 MB), 0.13 s in
    bfloat16; so a 7B model in bfloat16 (14 GB) needs roughly 8 s, small next to decoding.
    """
    import torch

    digest = hashlib.sha256()
    tensors = sorted(
        [*model.named_parameters(), *(("buffer:" + n, b) for n, b in model.named_buffers())],
        key=lambda item: item[0],
    )
    for name, tensor in tensors:
        data = tensor.detach()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        flat = data.contiguous().reshape(-1)
        if flat.numel() == 0:
            continue
        raw = flat.view(torch.uint8) if flat.dtype != torch.bool else flat.to(torch.uint8)
        for start in range(0, raw.numel(), _HASH_CHUNK_BYTES):
            digest.update(memoryview(raw[start : start + _HASH_CHUNK_BYTES].cpu().numpy()))
    return digest.hexdigest()


def normalize_answer(text: str) -> str:
    """The form in which a generation is compared with the label.

    Unicode NFKC, lower case, runs of whitespace as one space, surrounding whitespace and
    trailing punctuation removed: "Paris." and " paris" are the same answer, and a pair made of
    them would teach the model to prefer a full stop.
    """
    text = _SPACES_RE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()
    while text and text[-1] in _TRAILING_PUNCTUATION:
        text = text[:-1].rstrip()
    return text


def on_policy_pairs(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    device: str | None = None,
    cache: GenerationCache | None = None,
    model_key: str | None = None,
) -> tuple[list[dict[str, Any]], OnPolicyStats]:
    """Preference pairs (label = ``chosen``, the model's greedy answer = ``rejected``).

    ``rows`` are TRL preference rows with ``prompt`` and ``chosen``, standard (strings) or
    conversational (message lists; the prompt is rendered with the tokenizer's chat template
    and a generation prompt); a ``rejected`` already there is replaced. ``rejected`` takes the
    format of ``chosen``: the decoded string as it is (standard), or one assistant message
    with the stripped answer (conversational). Rows whose answer equals the label
    (:func:`normalize_answer`) or is empty are dropped; the kept rows keep their order.

    The model is used where it is (``device`` only overrides where the inputs go), in eval
    mode under ``torch.inference_mode`` (its training flag is restored after); the tokenizer
    is not changed. With ``cache``, answers already known for these weights and settings are
    reused and the new ones stored; ``model_key`` is the weights' :func:`model_fingerprint`
    when the caller has it (one pass over the weights per model, not per call).
    """
    started = time.perf_counter()
    stats = OnPolicyStats(rows=len(rows))
    encoded = [_prompt_ids(tokenizer, row, index) for index, row in enumerate(rows)]
    keys = [_prompt_key(ids) for ids in encoded]
    unique = dict(zip(keys, encoded, strict=True))  # first occurrence order
    stats.prompts = len(unique)

    answers: dict[str, str] = {}
    settings_key = ""
    settings: dict[str, Any] = {}
    if cache is not None and unique:
        settings = _settings(model, tokenizer, max_new_tokens)
        settings_key = _hash_json(settings)
        model_key = model_key or model_fingerprint(model)
        known = cache.load(model_key, settings_key)
        answers = {k: known[k] for k in unique if k in known}
    stats.cached = len(answers)
    todo = {k: ids for k, ids in unique.items() if k not in answers}
    if todo:
        fresh = _generate(model, tokenizer, todo, max_new_tokens, batch_size, device)
        stats.generated = len(fresh)
        answers.update(fresh)
        if cache is not None:
            assert model_key is not None  # set above with the cache
            cache.store(model_key, settings_key, settings, fresh)

    pairs: list[dict[str, Any]] = []
    for row, key in zip(rows, keys, strict=True):
        answer = answers[key]
        conversational = isinstance(row["chosen"], list)
        if not answer.strip():
            stats.dropped_empty += 1
            continue
        if normalize_answer(answer) == normalize_answer(_label_text(row["chosen"])):
            stats.dropped_equal += 1
            continue
        rejected: Any = [{"role": "assistant", "content": answer.strip()}] if conversational else answer
        pairs.append({**row, "rejected": rejected})
    stats.pairs = len(pairs)
    stats.seconds = time.perf_counter() - started
    return pairs, stats


# --- helpers ---------------------------------------------------------------------------------


def _prompt_ids(tokenizer: Any, row: dict[str, Any], index: int) -> list[int]:
    """The prompt as the model will see it: chat-rendered (conversational) or as TRL's DPO
    tokenizes a standard prompt (``tokenizer(prompt)``, special tokens included)."""
    from harness.align.data import is_messages
    from harness.align.logps import chat_ids

    where = f"on-policy pairs: row {index + 1}"
    if not isinstance(row, dict) or "chosen" not in row:
        have = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
        raise HarnessError(
            f"{where} has no label 'chosen' (has: {have or 'nothing'})",
            "give every row the data's answer as 'chosen'; the model's own answer becomes 'rejected'",
        )
    if "prompt" not in row:
        raise HarnessError(
            f"{where} has no 'prompt'",
            "give every row a prompt (a string, or the messages before the answer)",
        )
    prompt, chosen = row["prompt"], row["chosen"]
    if isinstance(prompt, str) and isinstance(chosen, str):
        ids = list(tokenizer(prompt)["input_ids"])
        if not ids:
            raise HarnessError(f"{where}: the prompt is empty", "give every row a non-empty prompt")
        return ids
    if is_messages(prompt) and is_messages(chosen):
        try:
            return chat_ids(tokenizer, [{"role": m["role"], "content": m["content"]} for m in prompt], True)
        except ValueError as err:
            raise HarnessError(f"{where}: {err}", "use a tokenizer with a chat template") from None
    raise HarnessError(
        f"{where}: prompt and chosen must both be strings or both be lists of {{role, content}} "
        f"messages (got {type(prompt).__name__} and {type(chosen).__name__})",
        "use one TRL preference format for the whole row",
    )


def _label_text(chosen: Any) -> str:
    if isinstance(chosen, str):
        return chosen
    return "\n".join(str(m["content"]) for m in chosen)


def _prompt_key(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:32]


def _hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Where an answer ends: the tokenizer's eos and the generation config's eos ids (chat
    models often end a turn with a token that only one of them names)."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        for token in value if isinstance(value, list | tuple) else [value]:
            if token is not None and int(token) not in ids:
                ids.append(int(token))
    return ids


def _settings(model: Any, tokenizer: Any, max_new_tokens: int) -> dict[str, Any]:
    """Everything besides the weights and the prompt that decides a greedy answer."""
    config = model.config.to_dict() if hasattr(model, "config") else {}
    generation = getattr(model, "generation_config", None)
    generation_dict = generation.to_dict() if generation is not None else {}
    return {
        "version": GENERATION_VERSION,
        "decoding": "greedy",
        "max_new_tokens": int(max_new_tokens),
        "stop_ids": _stop_ids(model, tokenizer),
        "tokenizer": _tokenizer_identity(tokenizer),
        "model_config": _hash_json({k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}),
        "generation_config": _hash_json(
            {k: v for k, v in generation_dict.items() if k not in _VOLATILE_CONFIG_KEYS}
        ),
    }


def _tokenizer_identity(tokenizer: Any) -> str:
    """A hash of what turns prompts into ids and ids into text: class, vocabulary, special
    tokens and chat template."""
    return _hash_json(
        {
            "class": type(tokenizer).__name__,
            "vocab": sorted(tokenizer.get_vocab().items()),
            "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
            "chat_template": getattr(tokenizer, "chat_template", None),
        }
    )


def _generate(
    model: Any,
    tokenizer: Any,
    prompts: dict[str, list[int]],
    max_new_tokens: int,
    batch_size: int,
    device: str | None,
) -> dict[str, str]:
    """Greedy answers (prompt key -> decoded new tokens), in left-padded batches.

    Left padding puts every prompt's last token at the right edge, where decoding continues;
    the attention mask hides the pads and ``generate`` derives positions from it, so each
    answer is what the prompt alone would give. Prompts are batched by length (less padding).
    """
    import torch

    target = torch.device(device) if device is not None else next(model.parameters()).device
    stop = _stop_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stop[0] if stop else 0)
    order = sorted(prompts, key=lambda k: len(prompts[k]))
    out: dict[str, str] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch_keys = order[start : start + batch_size]
                batch = [prompts[k] for k in batch_keys]
                width = max(len(ids) for ids in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, ids in enumerate(batch):  # never empty: _prompt_ids refuses that
                    input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    mask[i, width - len(ids) :] = 1
                generated = model.generate(
                    input_ids=input_ids.to(target),
                    attention_mask=mask.to(target),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=stop or None,
                    pad_token_id=pad,
                )
                for key, new in zip(batch_keys, generated[:, width:].tolist(), strict=True):
                    cut = next((i for i, token in enumerate(new) if token in stop), len(new))
                    out[key] = tokenizer.decode(new[:cut], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out
