"""Cheap checks of a checkpoint folder before any weights are loaded.

A user's local checkpoint can be broken in ways transformers reports with a traceback deep
in its loaders: a ``config.json`` it rejects, a ``model.safetensors`` cut short by a full disk
or an interrupted copy. Both are bad input: they get one line naming the file and exit 2,
before a merge or an evaluation starts. The weights check reads only the safetensors headers
(8 bytes plus a small JSON each), so it costs milliseconds whatever the model's size.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def load_model_config(ref: str, path: str, where: str) -> Any:
    """``AutoConfig`` for a resolved reference; a missing or rejected config is one line."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path)
    except Exception as err:  # noqa: BLE001  (transformers raises many kinds for a bad config)
        local = Path(path)
        if local.is_dir() and (local / "config.json").is_file():
            detail = " ".join(str(err).split())[:200]
            raise HarnessError(
                f"{where}model {ref!r}: {local / 'config.json'} is rejected by transformers ({detail})",
                "fix or regenerate the checkpoint's config.json",
            ) from None
        fix = (
            "the folder has no config.json"
            if local.is_dir()
            else "pass an existing local path, a demo: name (see `harness assets`), "
            "or a hub id available offline in the HF cache"
        )
        raise HarnessError(f"{where}model {ref!r} could not be found ({type(err).__name__})", fix) from None


def check_weights(ref: str, path: str, where: str = "") -> None:
    """Every ``*.safetensors`` file of a local folder has a readable header and is as long as
    its header says (a truncated file fails here, not halfway through a merge)."""
    folder = Path(path)
    if not folder.is_dir():
        return  # a hub id: the hub client verifies its own downloads
    for file in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(file)
        if problem:
            raise HarnessError(
                f"{where}model {ref!r}: {file} is unreadable ({problem})",
                "re-copy or re-save the checkpoint (a full disk or an interrupted copy truncates it)",
            )


def _safetensors_problem(file: Path) -> str | None:
    try:
        safetensors_header(file)
    except ValueError as err:
        return str(err)
    return None


def safetensors_header(file: Path) -> dict[str, Any]:
    """The tensors of a safetensors file as its header lists them (name -> dtype, shape,
    ``data_offsets``; ``__metadata__`` left out), read without loading any weights. A file
    that cannot hold what its header says raises ValueError naming the problem (too short,
    truncated inside its header or its data, a header that is not JSON)."""
    size = file.stat().st_size
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, shorter than a safetensors header")
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                raise ValueError("truncated inside its header")
            header = json.loads(fh.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"bad header: {type(err).__name__}") from None
    if not isinstance(header, dict):
        raise ValueError("bad header")
    tensors = {
        k: v
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
    }
    expected = 8 + length + max((v["data_offsets"][1] for v in tensors.values()), default=0)
    if size < expected:
        raise ValueError(f"truncated: {size} of {expected} bytes")
    return tensors
