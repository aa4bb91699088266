"""The tokens of each request, computed once per tokenizer and kept for the process.

Every trial of a study scores the same requests (the same few-shot contexts and answer
choices) with a different model but, in a merge search, the same tokenizer. lm-eval tokenises
each request again on every call (its ``_encode_pair``: the context plus continuation,
then the context alone): 3.4 s of a 10.3 s held-out H4 call (472 questions, 8 per task) of
a 7 M-parameter model on 2 CPU cores, measured with cProfile, and on a GPU the bulk of a
call. Here is lm-eval's own encoding of each ``(context, continuation)`` pair, kept
(``lm_eval_compat.ReusesEncodings`` asks here before lm-eval encodes) and keyed by what
decides it: the tokenizer's content (its serialised ``tokenizers`` model, so
two loads of one tokenizer share their tokens) and the ``HFLM`` settings ``tok_encode`` reads
(``add_bos_token``, the prefix token, causal or seq2seq).

Memory: a context's tokens are kept once as an ``array`` of 32-bit ints (4 bytes a token,
shared by its answer choices); a process keeps at most :data:`MAX_PAIRS` pairs and starts
over past that.
"""

from __future__ import annotations

import hashlib
import weakref
from array import array
from typing import Any

# Pairs kept per process before the memory starts over (an H4 study at 80 questions per task
# has about 20,000: 60 leaf tasks x 80 x 4 choices).
MAX_PAIRS = 250_000

_fingerprints: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of what a tokenizer encodes with (its class and serialised ``tokenizers``
    model, or for a slow tokenizer its vocabulary), computed once per tokenizer object."""
    found = _fingerprints.get(tokenizer)
    if found is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        content = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        found = hashlib.sha256(f"{type(tokenizer).__name__}|{content}".encode()).hexdigest()
        _fingerprints[tokenizer] = found
    return found


class Encodings:
    """``(context, continuation)`` -> lm-eval's ``(context_enc, continuation_enc)`` for one
    tokenizer and setting; contexts stored once."""

    def __init__(self) -> None:
        self.contexts: dict[str, array[int]] = {}
        self.pairs: dict[tuple[str, str], tuple[array[int], tuple[int, ...]]] = {}

    def get(self, context: str, continuation: str) -> tuple[list[int], list[int]] | None:
        found = self.pairs.get((context, continuation))
        if found is None:
            return None
        return list(found[0]), list(found[1])

    def put(
        self, context: str, continuation: str, context_enc: list[int], continuation_enc: list[int]
    ) -> None:
        stored = self.contexts.get(context)  # one context string always encodes the same
        if stored is None:
            stored = self.contexts[context] = array("i", context_enc)
        self.pairs[(context, continuation)] = (stored, tuple(continuation_enc))


_encodings: dict[tuple[Any, ...], Encodings] = {}


def encodings_for(key: tuple[Any, ...]) -> Encodings:
    """The process's encodings for one tokenizer and setting (all of them dropped when they
    hold more than :data:`MAX_PAIRS` pairs)."""
    if sum(len(e.pairs) for e in _encodings.values()) > MAX_PAIRS:
        _encodings.clear()
    return _encodings.setdefault(key, Encodings())
