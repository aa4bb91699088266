"""How close the demo search's scoring runs to this machine's matrix-multiply throughput.

Scores the demo base on the demo space's suite (the first ``--limit`` questions per task, as a
trial's full-fidelity search score does) in one process, twice: the first run includes
building lm-eval's tasks, the second is a trial's steady state. Hooks count what the model
actually ran: tokens through the backbone (padding included) and positions through the LM
head. Model FLOPs = 2 × non-embedding parameters × tokens + 2 × vocabulary × hidden × head
positions + attention scores (4 × layers × hidden × query tokens × keys). ``torch.mm`` on the
model's own MLP and LM-head shapes gives what this CPU attains; the ratio says how much any
scoring change could still win.

    python -m bench.flops
    python -m bench.flops --limit 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from bench.table import print_machine, print_markdown
from harness.evaluate.transformers_compat import CACHE_NAMES

_REPO = Path(__file__).resolve().parents[1]


class ForwardCounter:
    """Counts the tokens the backbone runs, its attention work and the LM head's positions."""

    def __init__(self, model: Any):
        self.config = model.config
        self.reset()
        model.model.register_forward_pre_hook(self._backbone, with_kwargs=True)
        model.get_output_embeddings().register_forward_pre_hook(self._head)

    def reset(self) -> None:
        self.tokens = 0
        self.head_positions = 0
        self.attention_flops = 0.0

    def _backbone(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        batch, length = shape
        past = next((kwargs[n] for n in CACHE_NAMES if kwargs.get(n) is not None), None)
        cached = past.get_seq_length() if past is not None and hasattr(past, "get_seq_length") else 0
        self.tokens += batch * length
        # QK^T and AV: 2 × 2 × hidden per (query, key) pair, causal keys = cached + (length + 1) / 2.
        layers, hidden = self.config.num_hidden_layers, self.config.hidden_size
        self.attention_flops += 4.0 * layers * hidden * batch * length * (cached + (length + 1) / 2)

    def _head(self, module: Any, args: tuple[Any, ...]) -> None:
        self.head_positions += args[0].numel() // args[0].shape[-1]


def matmul_gflops(rows: int, inner: int, outer: int, repeats: int = 20) -> float:
    a, w = torch.randn(rows, inner), torch.randn(inner, outer)
    for _ in range(3):
        a @ w
    began = time.perf_counter()
    for _ in range(repeats):
        a @ w
    return 2 * rows * inner * outer * repeats / (time.perf_counter() - began) / 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--space", default=str(_REPO / "search/demo.yaml"))
    parser.add_argument("--model", default="demo:smollm2-135m-instruct")
    parser.add_argument("--limit", type=int, default=30, help="questions per task")
    args = parser.parse_args(argv)

    from harness.evaluate.runner import evaluate_model, plan_evaluation
    from harness.merge.loading import load_pretrained
    from harness.search.space import load_space

    space = load_space(Path(args.space))
    model, tokenizer, _ = load_pretrained(args.model, device="cpu", dtype="float32")
    config = model.config
    embedding = config.vocab_size * config.hidden_size
    backbone = sum(p.numel() for p in model.model.parameters()) - embedding
    counter = ForwardCounter(model)
    plan = plan_evaluation(list(space.suite_refs), data_dir=Path(space.data_dir) if space.data_dir else None)

    rows: list[dict[str, Any]] = []
    for label in ("first (builds lm-eval's tasks)", "second (a trial's steady state)"):
        counter.reset()
        began = time.perf_counter()
        result = evaluate_model(
            model,
            tokenizer,
            space.suite_refs,
            limit=args.limit,
            plan=plan,
            progress=False,
            batch_size=space.batch_size,
            fast=space.fast_scoring,
        )
        seconds = time.perf_counter() - began
        questions = len({(sample.task, sample.doc_id) for sample in result.samples})
        flops = (
            2 * backbone * counter.tokens + 2 * embedding * counter.head_positions + counter.attention_flops
        )
        rows.append(
            {
                "run": label,
                "seconds": f"{seconds:.1f}",
                "questions": questions,
                "tokens run / LM-head positions": f"{counter.tokens} / {counter.head_positions}",
                "model TFLOP": f"{flops / 1e12:.2f}",
                "achieved GFLOP/s": f"{flops / seconds / 1e9:.1f}",
            }
        )
    hidden, inner = config.hidden_size, config.intermediate_size
    attainable = {
        f"torch.mm 1024×{hidden}×{inner} (MLP)": matmul_gflops(1024, hidden, inner),
        f"torch.mm 256×{hidden}×{inner} (MLP)": matmul_gflops(256, hidden, inner),
        f"torch.mm 1024×{hidden}×{config.vocab_size} (LM head)": matmul_gflops(
            1024, hidden, config.vocab_size, repeats=5
        ),
    }
    print_machine()
    print(f"threads: {torch.get_num_threads()}, backbone parameters without the embedding: {backbone:,}")
    print_markdown(rows)
    print()
    steady = float(rows[-1]["achieved GFLOP/s"])
    print_markdown(
        [
            {"kernel": name, "GFLOP/s": f"{value:.1f}", "scoring's share": f"{steady / value:.2f}"}
            for name, value in attainable.items()
        ]
    )


if __name__ == "__main__":
    main()
