"""Give the memory a stage freed back to the operating system before the next stage.

glibc's malloc keeps freed blocks below its mmap threshold (which it raises up to 32 MB as
large blocks are freed) in the heap for reuse. Between a trial's stages that memory is
fragmented: measured on the demo's TIES + DPO trial (``bench/memory.py``), the process stayed
at 5.8 GiB while scoring after DPO, 2.6 GiB of it free heap, and the merge's freed temporaries
were not all reused by the DPO step that followed. ``malloc_trim`` returns the free pages; it
is the CPU counterpart of ``torch.cuda.empty_cache`` after a stage.
"""

from __future__ import annotations

import ctypes
import gc
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent on macOS and musl
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Collect garbage, then hand free heap pages back to the OS (a no-op without glibc)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
