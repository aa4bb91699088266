"""The one place that touches TRL's private internals (``tests/test_trl_compat.py`` guards it).

Everything else in the alignment stage uses TRL's public API (``DPOConfig``, ``DPOTrainer``,
``KTOConfig``, ``KTOTrainer``); ORPO is experimental in TRL 1.x and imported here
(``orpo_classes``). What is here works around four things TRL does that are wrong, wasteful or
noisy for the harness:

- ``ref_model=None`` without PEFT makes TRL 1.x's DPO and KTO trainers re-load the reference
  from the model's ``_name_or_path``: wrong for a merge that lives only in memory
  (``no_reference_reload``);
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

from harness.errors import AlignmentError


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


DPO_TRAINER_MODULE = "trl.trainer.dpo_trainer"


@contextlib.contextmanager
def no_reference_reload(module: str = DPO_TRAINER_MODULE) -> Iterator[None]:
    """Make a TRL trainer's ``ref_model=None`` fallback (a reload from ``_name_or_path``) an
    error. ``module`` is the trainer's module, where it calls ``create_model_from_path``
    (DPO's and KTO's trainers both do)."""
    import importlib

    trainer_module = importlib.import_module(module)
    original = getattr(trainer_module, "create_model_from_path", None)
    if original is None:  # a TRL without this hook: nothing to guard
        yield
        return

    def refuse(path: Any, *args: Any, **kwargs: Any) -> Any:
        raise AlignmentError(
            f"TRL tried to re-load the reference model from {path!r}; the reference must be the "
            "in-memory starting model (this is a harness bug)"
        )

    trainer_module.create_model_from_path = refuse  # type: ignore[attr-defined]
    try:
        yield
    finally:
        trainer_module.create_model_from_path = original  # type: ignore[attr-defined]


def orpo_classes() -> tuple[type, type]:
    """TRL's ORPO config and trainer: experimental in TRL 1.x (``trl.experimental.orpo``),
    where an upgrade may move them; this is the one place that knows where they are."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*")
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    return ORPOConfig, ORPOTrainer


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
