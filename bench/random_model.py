"""A randomly initialised causal LM of a given shape, saved with a tokenizer: for timing only.

Throughput depends on the shape, not the weights, so a bench machine without the weights
(no hub access, or a model too large to copy there) can still time a realistic size. Its
scores mean nothing and the bench labels it.

    python -m bench.random_model --config PATH/config.json --tokenizer DIR --out DIR \
        [--layers 24 --hidden 2048 --intermediate 8192 --heads 32 --kv-heads 32] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a config.json to start from")
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--hidden", type=int)
    parser.add_argument("--intermediate", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    config = AutoConfig.from_pretrained(args.config)
    for field, value in (
        ("num_hidden_layers", args.layers),
        ("hidden_size", args.hidden),
        ("intermediate_size", args.intermediate),
        ("num_attention_heads", args.heads),
        ("num_key_value_heads", args.kv_heads),
    ):
        if value is not None:
            setattr(config, field, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(args.tokenizer).save_pretrained(args.out)
    print(f"{args.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, {args.dtype}")


if __name__ == "__main__":
    main()
