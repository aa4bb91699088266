"""Get a pinned wheel onto disk and prove it is the pinned file.

Order: ``$HARNESS_WHEELS_DIR/<file>`` (air-gapped machines, tests; used in place, never
modified), then the cache ``<home>/wheels/<file>``, then ``pip download --no-deps`` into the
cache. Every file is sha256-checked before use; a download is checked before it is renamed
into the cache, so the cache only ever holds verified wheels.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.assets.fsutil import sha256_file
from harness.assets.pins import PinnedWheel
from harness.errors import HarnessError

WHEELS_DIR_ENV = "HARNESS_WHEELS_DIR"

# pip's retry warnings name the urllib3 error and the host when the index cannot be reached.
_NETWORK_ERROR = re.compile(r"\b(\w*(?:Connection|Timeout|Resolution|Proxy|SSL)\w*Error)\b")
_HOST = re.compile(r"host='([^']+)'")


@dataclass
class FetchedWheel:
    pin: PinnedWheel
    path: Path
    source: str  # "HARNESS_WHEELS_DIR", "cache" or "pip"
    download_s: float
    verify_s: float


def _user_wheels_dir() -> Path | None:
    env = os.environ.get(WHEELS_DIR_ENV)
    return Path(env).expanduser() if env else None


def _mismatch(pin: PinnedWheel, path: Path, actual: str, fix: str) -> HarnessError:
    return HarnessError(
        f"sha256 mismatch for {pin.filename} ({path}): expected {pin.sha256}, got {actual}", fix
    )


def pip_download(pin: PinnedWheel, dest: Path) -> Path:
    """``pip download`` exactly the pinned wheel into ``dest``; HarnessError if pip fails.

    ``--no-deps`` because the wheel's dependencies would break this stack, ``--only-binary``
    so pip never builds an sdist. pip's own retries/timeouts (PIP_RETRIES, PIP_TIMEOUT,
    PIP_INDEX_URL, ...) apply as usual.
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-input",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "-d",
        str(dest),
        pin.requirement,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    path = dest / pin.filename
    if proc.returncode == 0 and path.is_file():
        return path
    if proc.returncode == 0:
        got = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        reason = f"pip saved {got}, not {pin.filename}"
    else:
        reason = _pip_reason(proc.stdout + "\n" + proc.stderr)
    raise HarnessError(
        f"could not download {pin.requirement} with pip ({reason})",
        f"check that PyPI (or your PIP_INDEX_URL) is reachable, or put {pin.filename} "
        f"in a folder and set {WHEELS_DIR_ENV} to it",
    )


def _pip_reason(output: str) -> str:
    """One short phrase for why pip failed, from its stdout+stderr."""
    if "No module named pip" in output:
        return "pip is not installed in this Python environment"
    if network := _NETWORK_ERROR.search(output):
        host = _HOST.search(output)
        where = f" reaching {host.group(1)}" if host else ""
        return f"network error{where}: {network.group(1)}"
    if "not a trusted or secure host" in output:
        return "pip ignored a plain-http index as not trusted (use https or --trusted-host)"
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    last = (errors or lines or ["pip failed with no output"])[-1].removeprefix("ERROR: ")
    if "No matching distribution" in last or "Could not find a version" in last:
        return f"{last} - is the package index reachable?"
    return last[:200]


def fetch_wheel(pin: PinnedWheel, cache_dir: Path) -> FetchedWheel:
    """A verified local copy of ``pin``; raises HarnessError and leaves nothing unverified."""
    user_dir = _user_wheels_dir()
    if user_dir is not None and (user_dir / pin.filename).is_file():
        path = user_dir / pin.filename
        t0 = time.perf_counter()
        actual = sha256_file(path)
        verify_s = time.perf_counter() - t0
        if actual != pin.sha256:
            # The user's file: report it, never delete it.
            raise _mismatch(
                pin, path, actual, f"replace it with the file from PyPI or unset {WHEELS_DIR_ENV}"
            )
        return FetchedWheel(pin, path, WHEELS_DIR_ENV, 0.0, verify_s)

    cached = cache_dir / pin.filename
    if cached.is_file():
        t0 = time.perf_counter()
        actual = sha256_file(cached)
        verify_s = time.perf_counter() - t0
        if actual == pin.sha256:
            return FetchedWheel(pin, cached, "cache", 0.0, verify_s)
        cached.unlink()  # corrupted cache entry: fetch again below

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download.tmp-", dir=cache_dir) as tmp:
        t0 = time.perf_counter()
        downloaded = pip_download(pin, Path(tmp))
        download_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        actual = sha256_file(downloaded)
        verify_s = time.perf_counter() - t0
        if actual != pin.sha256:
            raise _mismatch(
                pin,
                downloaded,
                actual,
                "the download is corrupt or the release was replaced; nothing was kept, retry or report it",
            )
        os.replace(downloaded, cached)
    return FetchedWheel(pin, cached, "pip", download_s, verify_s)
