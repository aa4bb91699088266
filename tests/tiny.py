"""Tiny real models for tests: a few-layer Llama and a byte-level BPE tokenizer.

They are real ``transformers`` checkpoints on disk (safetensors + tokenizer files), so
every code path that loads a hub model or a local path is exercised for real.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.doctor.models import byte_level_tokenizer as harness_tokenizer

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. Answer: A B C D",
    "Question: Which gas do plants absorb? Answer: carbon dioxide",
    "정답： 1 2 3 4 한국어 문제",
    "0123456789 the quick brown fox jumps over the lazy dog",
]


@lru_cache(maxsize=1)
def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (any UTF-8 text encodes) with a few merges and chat tokens."""
    fast = harness_tokenizer(_CORPUS * 4, vocab_size=320)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_llama_config(num_layers: int = 4, vocab_size: int | None = None, hidden: int = 32) -> LlamaConfig:
    tok = byte_level_tokenizer()
    return LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def make_tiny_llama(path: Path, seed: int = 0, num_layers: int = 4, hidden: int = 32) -> Path:
    """Write a randomly initialised tiny Llama + tokenizer to ``path``; return ``path``."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(num_layers=num_layers, hidden=hidden))
    model.eval()
    path = Path(path)
    model.save_pretrained(path)
    byte_level_tokenizer().save_pretrained(path)
    return path
