"""The one place that touches TRL's private internals (``tests/test_trl_compat.py`` guards it).

Everything else in the alignment stage uses TRL's public API (``DPOConfig``, ``DPOTrainer``).
What is here works around four things TRL does that are wrong, wasteful or noisy for the harness:

- ``ref_model=None`` without PEFT makes TRL 1.x re-load the reference from the model's
  ``_name_or_path``: wrong for a merge that lives only in memory (``no_reference_reload``);
- a trainer leaves its fused LM head and checkpointing settings on the model it trained
  (``strip_trl_patches``);
- off CUDA, TRL's fused LM head runs the 49k-word head over every position of the batch,
  prompt and padding included, and throws those log-probabilities away
  (``labelled_positions_only``);
- TRL 1.16 still uses transformers 4's gradient checkpointing names, which transformers 5
  answers with FutureWarnings on every trained model (``checkpointing_rename_quiet``).

An upgrade that renames one of these internals makes the test file fail by name; at run time
the harness then falls back to TRL's own behaviour (correct, slower) rather than crash.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any


def strip_trl_patches(model: Any) -> None:
    """Undo what a DPOTrainer leaves on a model it trained.

    TRL's fused LM head is an instance-level ``forward`` whose closure holds the *original*
    model's bound forward: a deepcopy would keep calling the source model. Gradient
    checkpointing is a training setting, not part of the model.
    """
    model.__dict__.pop("forward", None)
    # transformers 5 renamed gradient checkpointing to activation checkpointing.
    with checkpointing_rename_quiet():
        if hasattr(type(model), "is_activation_checkpointing"):
            if model.is_activation_checkpointing:
                model.activation_checkpointing_disable()
        elif getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()


@contextlib.contextmanager
def checkpointing_rename_quiet() -> Iterator[None]:
    """Keep transformers 5's FutureWarnings about the gradient -> activation checkpointing
    rename off the console: TRL 1.16 reads ``is_gradient_checkpointing`` and the model's
    own overrides still route through ``gradient_checkpointing_enable``/``_disable``. The
    user asked for ``gradient_checkpointing: true`` and cannot act on them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing", category=FutureWarning)
        yield


@contextlib.contextmanager
def no_reference_reload() -> Iterator[None]:
    """Make TRL's ``ref_model=None`` fallback (a reload from ``_name_or_path``) an error."""
    import trl.trainer.dpo_trainer as dpo_module

    original = getattr(dpo_module, "create_model_from_path", None)
    if original is None:  # a TRL without this hook: nothing to guard
        yield
        return

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        from harness.align.trainer import AlignmentError  # the trainer imports this module

        raise AlignmentError(
            f"TRL tried to re-load the DPO reference from {path!r}; the reference must be the "
            "in-memory starting model (this is a harness bug)"
        )

    dpo_module.create_model_from_path = refuse
    try:
        yield
    finally:
        dpo_module.create_model_from_path = original


@contextlib.contextmanager
def labelled_positions_only() -> Iterator[None]:
    """Run TRL's fused LM head only on the positions that have a label, on CPU too.

    TRL 1.x (``add_fused_lm_head``) scores only the labelled positions ("compact") where its
    Triton kernels run (CUDA, XPU) and every position elsewhere, so that an XLA device such as
    Neuron sees the same tile shapes on every batch. On a CPU nothing is compiled, and a DPO
    batch is mostly prompt and padding: the LM head and its log-softmax over the vocabulary
    ran for positions whose log-probabilities are then masked to zero. Scoring the labelled
    rows only is the same computation per position (the log-softmax is per row), so the
    numbers agree to float rounding (tested); the demo's 5-step DPO run is 1.29× faster on 2
    cores (``bench/align.py``: medians 44.8 vs 34.8 s). Other devices keep TRL's choice.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # TRL moved it: keep its own behaviour
        yield
        return

    def compact(device: Any) -> bool:
        return bool(original(device)) or getattr(device, "type", None) == "cpu"

    trl_utils._use_triton = compact
    try:
        yield
    finally:
        trl_utils._use_triton = original
