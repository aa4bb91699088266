"""Scoring throughput: the shared-prefix path vs lm-eval's stock HFLM, side by side.

For each setting (the H4 settings ARC-C 25-shot, HellaSwag 10-shot, MMLU 5-shot, and the demo's
0-shot proxy) lm-eval builds the requests once; every round then times stock ``HFLM`` at each
candidate batch size and :class:`SharedPrefixHFLM` on exactly those requests, in alternating
order, on one loaded model. The table gives medians over rounds, stock at its best batch size,
and the ratio. Equality is checked on every request of every round: log-likelihoods within
1e-4 in float32 (reported, not asserted, in lower precision), greedy flags and each question's
accuracy (argmax, raw and length-normalised) identical; the run exits 1 otherwise.

    python -m bench.scoring                      # the demo model on this machine's device
    python -m bench.scoring --model PATH --dtype bfloat16 --device cuda --rounds 5
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Setting:
    label: str
    tasks: tuple[str, ...]
    num_fewshot: int
    questions: int  # documents per task


SETTINGS = (
    Setting("ARC-C 25-shot", ("arc_challenge",), 25, 6),
    Setting("HellaSwag 10-shot", ("hellaswag",), 10, 6),
    Setting("MMLU 5-shot", ("mmlu_marketing", "mmlu_anatomy", "mmlu_astronomy"), 5, 4),
    Setting("proxy 0-shot", ("arc_easy", "arc_challenge", "hellaswag", "mmlu_marketing"), 0, 8),
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(lm: Any, requests: list[Any]) -> tuple[float, list[tuple[float, bool]]]:
    gc.collect()
    _sync(lm.device)
    started = time.perf_counter()
    answers = lm.loglikelihood(requests, disable_tqdm=True)
    _sync(lm.device)
    return time.perf_counter() - started, answers


def _accuracies(
    requests: list[Any], answers: list[tuple[float, bool]]
) -> dict[tuple[str, int], tuple[int, int]]:
    """Per question: the chosen answer by log-likelihood and by length-normalised log-likelihood
    (lm-eval's acc and acc_norm rules)."""
    choices: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    for request, (ll, _) in zip(requests, answers, strict=True):
        continuation = request.arguments[1]
        choices[(request.task_name, request.doc_id)].append((request.idx, ll, ll / max(1, len(continuation))))
    out = {}
    for key, rows in choices.items():
        rows.sort()
        out[key] = (max(rows, key=lambda r: r[1])[0], max(rows, key=lambda r: r[2])[0])
    return out


def _differences(
    requests: list[Any], stock: list[tuple[float, bool]], fast: list[tuple[float, bool]]
) -> tuple[float, int]:
    """Largest |log-likelihood difference|, and greedy flags plus chosen answers that differ."""
    worst = max(abs(a[0] - b[0]) for a, b in zip(stock, fast, strict=True))
    greedy = sum(a[1] != b[1] for a, b in zip(stock, fast, strict=True))
    ours, theirs = _accuracies(requests, fast), _accuracies(requests, stock)
    return worst, greedy + sum(ours[k] != theirs[k] for k in theirs)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lm_eval.models.huggingface import HFLM

    from harness.evaluate import plan_evaluation
    from harness.evaluate.fast_lm import SharedPrefixHFLM
    from harness.evaluate.lm_eval_compat import task_requests
    from harness.evaluate.tasks import run_task_manager
    from harness.merge.loading import load_pretrained

    model, tokenizer, _ = load_pretrained(args.model, device=args.device, dtype=args.dtype)
    model.eval()
    exact = next(model.parameters()).dtype == torch.float32  # 1e-4 is the float32 promise
    plan = plan_evaluation(["h4", "arc_easy"], data_dir=args.data_dir)
    task_manager = run_task_manager(str(plan.include_dir) if plan.include_dir else None)
    batch_sizes = [int(b) for b in args.stock_batch_sizes.split(",")]
    stock_lms = {b: HFLM(pretrained=model, tokenizer=tokenizer, batch_size=b) for b in batch_sizes}
    fast_lm = SharedPrefixHFLM(pretrained=model, tokenizer=tokenizer, batch_tokens=args.batch_tokens)
    chosen = [
        s for s in SETTINGS if not args.settings or any(k.lower() in s.label.lower() for k in args.settings)
    ]
    rows = []
    for setting in chosen:
        questions = args.questions or setting.questions
        requests = task_requests(setting.tasks, task_manager, setting.num_fewshot, questions)
        documents = len({(r.task_name, r.doc_id) for r in requests})
        times: dict[str, list[float]] = defaultdict(list)
        worst, differing = 0.0, 0
        for round_ in range(args.rounds):
            arms = [("fast", fast_lm)] + [(f"stock@{b}", lm) for b, lm in stock_lms.items()]
            if round_ % 2:
                arms.reverse()  # alternate who runs first (warm caches, thermal state)
            answers: dict[str, list[tuple[float, bool]]] = {}
            for name, lm in arms:
                seconds, answers[name] = _timed(lm, requests)
                times[name].append(seconds)
            for name in answers:
                if name != "fast":
                    gap, count = _differences(requests, answers[name], answers["fast"])
                    worst, differing = max(worst, gap), max(differing, count)
        medians = {name: statistics.median(t) for name, t in times.items()}
        best_stock = min((n for n in medians if n != "fast"), key=medians.__getitem__)
        row = {
            "setting": setting.label,
            "questions": documents,
            "requests": len(requests),
            "stock": f"{documents / medians[best_stock]:.2f} q/s ({best_stock})",
            "fast": f"{documents / medians['fast']:.2f} q/s",
            "speed-up": f"{medians[best_stock] / medians['fast']:.2f}x",
            "max |dll|": f"{worst:.1e}",
            "answers differing": str(differing),
            "equal": "yes" if worst <= 1e-4 and not differing else ("NO" if exact else "n/a (not float32)"),
        }
        rows.append(row)
        print(" | ".join(str(v) for v in row.values()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo:smollm2-135m-instruct")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--questions", type=int, default=None, help="documents per task (default: per setting)"
    )
    parser.add_argument("--stock-batch-sizes", default="8,16")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--settings", nargs="*", help="labels to run (substrings), default all")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(
        f"# scoring throughput: {args.model} {args.dtype} on {platform.node()} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}); medians of {args.rounds} rounds"
    )
    print(
        "setting | questions | requests | stock HFLM (best batch) | shared-prefix | speed-up | max |dll| | "
        "answers differing | equal"
    )
    rows = run(args)
    if any(row["equal"] == "NO" for row in rows):
        sys.exit("bench: the shared-prefix path differs from stock HFLM in float32 (see the table)")


if __name__ == "__main__":
    main()
