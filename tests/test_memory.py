"""release_freed_memory: freed heap memory goes back to the OS (the RSS between stages)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from pathlib import Path

from harness.memory import release_freed_memory

def rss_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

# 400 MiB in 100 KiB blocks (below glibc's mmap threshold: they live in the heap), then a
# block after them, so the freed ones are not at the heap's top where free() trims anyway.
blocks = [bytearray(100 * 1024) for _ in range(4096)]
pin = bytearray(100 * 1024)
full = rss_mib()
del blocks
freed = rss_mib()
if sys.argv[1] == "release":
    release_freed_memory()
print(full, freed, rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc, glibc's malloc_trim")
def test_freed_heap_memory_goes_back_to_the_os():
    def run(mode: str) -> tuple[float, float, float]:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        full, freed, after = map(float, out.stdout.split())
        return full, freed, after

    full, freed, kept = run("keep")
    assert freed > full - 100, "without a release glibc keeps the freed blocks (what the fix is for)"
    full, freed, after = run("release")
    assert after < full - 300, (full, freed, after)


def test_bench_counts_the_largest_depth_up_scaled_model(tiny_models, tmp_path):
    """bench.memory's 'models it must hold' takes a passthrough space at its deepest (the lowest
    start with the highest end, which neither end of every range gives): here 4 + 3 = 7 layers
    of a 4-layer model. The count must equal the bytes of that model as built."""
    from bench.memory import largest_passthrough, layer_bytes
    from harness.merge import build_model
    from harness.recipe import recipe_from_dict, resolve_recipe

    base = str(tiny_models["base"])
    template = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": base, "layer_range": [0, {"int": [2, 4]}]}]},
            {"sources": [{"model": base, "layer_range": [{"int": [1, 3]}, 4]}]},
        ],
    }
    deepest = {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [{"model": base, "layer_range": [0, 4]}]},
            {"sources": [{"model": base, "layer_range": [1, 4]}]},
        ],
    }
    out = tmp_path / "deepest"
    build_model(resolve_recipe(recipe_from_dict({"merge": deepest})), out_dir=out)
    outside, per_layer = layer_bytes(str(out))
    assert (outside, per_layer) == layer_bytes(base)
    assert largest_passthrough(template) == outside + 7 * per_layer
