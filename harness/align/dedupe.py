"""Near-duplicate removal: MinHash LSH over word shingles (the seed recipe drops items whose
prompt nearly repeats an earlier one, or a scored benchmark's)."""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


_WORD_RE = re.compile(r"[a-z0-9]+")
_NUM_PERM = 64
_BANDS = 16  # 16 bands x 4 rows: pairs with Jaccard >= ~0.6 collide with high probability
_PRIME = (1 << 31) - 1  # a Mersenne prime


def _shingles(text: str, n: int = 3) -> set[int]:
    words = _WORD_RE.findall(text.lower())
    if len(words) < n:
        return {zlib.crc32(" ".join(words).encode())}
    return {zlib.crc32(" ".join(words[i : i + n]).encode()) for i in range(len(words) - n + 1)}


_PERM_RNG = random.Random(1234)
_PERM_A = [_PERM_RNG.randrange(1, _PRIME) for _ in range(_NUM_PERM)]
_PERM_B = [_PERM_RNG.randrange(0, _PRIME) for _ in range(_NUM_PERM)]


def _minhash(shingles: set[int]) -> tuple[int, ...]:
    import numpy as np

    values = np.fromiter(shingles, dtype=np.uint64, count=len(shingles))
    a = np.asarray(_PERM_A, dtype=np.uint64)[:, None]
    b = np.asarray(_PERM_B, dtype=np.uint64)[:, None]
    # a < 2^31 and a crc32 < 2^32: a*x + b stays below 2^64, so uint64 is exact.
    return tuple(((a * values[None, :] + b) % np.uint64(_PRIME)).min(axis=1).tolist())


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(1, len(a | b))


@dataclass
class NearDuplicateIndex:
    """MinHash-LSH index: ``contains(text)`` if an indexed text has Jaccard >= threshold."""

    threshold: float = 0.8
    _buckets: dict[tuple[int, tuple[int, ...]], list[int]] = field(default_factory=dict)
    _sets: list[set[int]] = field(default_factory=list)

    def _bands(self, sig: tuple[int, ...]) -> Iterator[tuple[int, tuple[int, ...]]]:
        rows = _NUM_PERM // _BANDS
        for band in range(_BANDS):
            yield band, sig[band * rows : (band + 1) * rows]

    def add(self, text: str) -> None:
        shingles = _shingles(text)
        sig = _minhash(shingles)
        idx = len(self._sets)
        self._sets.append(shingles)
        for key in self._bands(sig):
            self._buckets.setdefault(key, []).append(idx)

    def contains(self, text: str) -> bool:
        shingles = _shingles(text)
        sig = _minhash(shingles)
        seen: set[int] = set()
        for key in self._bands(sig):
            for idx in self._buckets.get(key, ()):
                if idx not in seen:
                    seen.add(idx)
                    if _jaccard(shingles, self._sets[idx]) >= self.threshold:
                        return True
        return False

    def __len__(self) -> int:
        return len(self._sets)


def near_duplicate_mask(texts: Sequence[str], threshold: float = 0.8) -> list[bool]:
    """True for each text kept: the first of every near-duplicate group (Jaccard >= threshold)."""
    index = NearDuplicateIndex(threshold)
    keep: list[bool] = []
    for text in texts:
        dup = index.contains(text)
        keep.append(not dup)
        if not dup:
            index.add(text)
    return keep
