"""The one place that relies on ``transformers`` behaviour beyond ``model(input_ids).logits``.

The shared-prefix scorer (:mod:`harness.evaluate.fast_lm`) runs a context once, keeps its
key/value cache, copies the cache's rows for each answer choice and continues from it; and it
asks the model for logits at chosen positions only. Those are ``forward`` arguments and
``Cache`` methods that moved between transformers releases (``num_logits_to_keep`` became
``logits_to_keep``; ``Cache.batch_select_indices`` arrived with the layered caches; 5.25
renamed ``forward``'s ``past_key_values`` argument and output field to ``cache``, keeping the
old argument name as a deprecated alias). The cache's name is read from each model's own
``forward`` signature, so a release, a model class or remote code on either side of the rename
is served. A model or a release without what is needed is scored by lm-eval's stock path
instead, never approximately, and ``tests/test_fast_scoring.py`` fails loudly when an upgrade
breaks what is here (``test_the_cache_argument_is_found_under_either_name`` for the rename).

The build stage uses one more: building a merged model's skeleton without random weights
(``test_in_memory_build_draws_no_random_weights`` in ``tests/test_build.py`` fails if the
init comes back).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_NEEDED_ARGUMENTS = ("attention_mask", "position_ids", "use_cache", "logits_to_keep")
# The key/value cache's name in ``forward`` and in its output, newest first: transformers 5.25
# renamed ``past_key_values`` to ``cache``.
CACHE_NAMES = ("cache", "past_key_values")


def _forward_parameters(model: Any) -> Any:
    return inspect.signature(model.forward).parameters


def cache_argument(model: Any) -> str | None:
    """The name under which ``model.forward`` takes (and returns) its key/value cache, or None
    when it takes neither. Read from the signature (``functools.wraps``-transparent, so the
    deprecation wrapper around a renamed ``forward`` shows the new name)."""
    try:
        parameters = _forward_parameters(model)
    except (TypeError, ValueError):
        return None
    return next((name for name in CACHE_NAMES if name in parameters), None)


def shares_prefixes(model: Any) -> str | None:
    """Why ``model`` cannot be scored from a shared context cache, or None when it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return "config says it is not a decoder-only transformers model"
    try:
        parameters = _forward_parameters(model)
    except (TypeError, ValueError):
        return "forward has no inspectable signature"
    missing = [name for name in _NEEDED_ARGUMENTS if name not in parameters]
    if cache_argument(model) is None:
        missing.insert(2, " or ".join(CACHE_NAMES))
    if missing:
        return f"forward takes no {', '.join(missing)}"
    return None


def last_logits_and_cache(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any = None,
) -> tuple[torch.Tensor, Any]:
    """Logits of the last position only ([batch, vocab]) and the key/value cache of the whole
    input (run after ``cache`` when given; ``attention_mask`` then covers it too). The LM head
    never sees the other positions."""
    out, name = _forward(model, input_ids, attention_mask, position_ids, cache, logits_to_keep=1)
    return out.logits[:, -1, :], getattr(out, name)


def select_cache_rows(cache: Any, rows: torch.Tensor) -> Any:
    """A new cache whose batch rows are ``rows`` of ``cache`` (repeats allowed): each answer
    choice gets its own copy of its question's context cache. ``cache`` itself is left as it
    was, so several groups of choices can each continue from it. (A layer's
    ``batch_select_indices`` and ``update`` rebind its tensors rather than write into them, so
    copying the layer objects is enough.)"""
    if not hasattr(cache, "batch_select_indices") or not isinstance(getattr(cache, "layers", None), list):
        raise TypeError(f"{type(cache).__name__} has no layers with batch_select_indices")
    copied = copy.copy(cache)
    copied.layers = [copy.copy(layer) for layer in cache.layers]
    copied.batch_select_indices(rows)
    return copied


def continue_from_cache(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
) -> torch.Tensor:
    """Logits of every position of ``input_ids`` run after ``cache`` (``attention_mask``
    covers the cached positions too)."""
    return _forward(model, input_ids, attention_mask, position_ids, cache, logits_to_keep=0)[0].logits


def _forward(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
    logits_to_keep: int,
) -> tuple[Any, str]:
    """One forward with explicit positions, after ``cache`` if any, keeping the cache;
    ``logits_to_keep``: the last N positions' logits, 0 for all of them. Returns the output and
    the name its cache is under (the one ``forward`` takes it by)."""
    name = cache_argument(model)
    if name is None:  # shares_prefixes said so first: a caller skipped it
        raise TypeError(f"{type(model).__name__}.forward takes no key/value cache")
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=logits_to_keep,
        **{name: cache},
    )
    return out, name


@contextmanager
def weights_left_uninitialised() -> Iterator[None]:
    """Build a model whose every parameter is about to be overwritten without initialising
    them: the random init of a 135M model costs 2.5 s on 2 CPU cores, more than a SLERP merge.
    Buffers computed in ``__init__`` (rotary frequencies) are still computed. This is what
    ``from_pretrained`` itself does (``transformers.initialization.no_init_weights``, which
    swaps ``torch.nn.init``'s functions for no-ops while the context is open)."""
    from transformers.initialization import no_init_weights

    with no_init_weights():
        yield


_TORCH_DTYPE_DEPRECATION = "`torch_dtype` is deprecated"


class _DropTorchDtypeDeprecation:
    def filter(self, record: Any) -> bool:
        return _TORCH_DTYPE_DEPRECATION not in record.getMessage()


@contextmanager
def torch_dtype_deprecation_quiet() -> Iterator[None]:
    """Keep transformers' "`torch_dtype` is deprecated" warning off the console while mergekit
    (0.1.5 sets ``config.torch_dtype``) builds an output config: the user did not write that
    line and cannot act on it. Only that message of that logger is dropped; it is a
    ``warning_once``, so code that reaches it later in the process stays quiet too."""
    import logging

    log = logging.getLogger("transformers.configuration_utils")
    quiet = _DropTorchDtypeDeprecation()
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


@contextmanager
def weight_bars_off() -> Iterator[None]:
    """Keep transformers' own per-model bars ("Loading weights" in ``from_pretrained``, "Writing
    model shards" in ``save_pretrained``) off the console: a search loads or keeps a model many
    times, each bar is a fraction of a second, and the harness says what it is doing itself.
    Uses transformers' public tqdm hook and restores the previous one; huggingface_hub's
    download bars are its own and stay on."""
    from transformers.utils import logging as hf_logging

    empty = getattr(hf_logging, "EmptyTqdm", None)
    if empty is None or not hasattr(hf_logging, "set_tqdm_hook"):  # another version: bars stay
        yield
        return
    previous = hf_logging.set_tqdm_hook(lambda _factory, args, kwargs: empty(*args, **kwargs))
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)
