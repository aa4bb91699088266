"""The lock: the exact versions `make test` last passed with, and what differs from it.

`requirements.lock` pins every distribution of the test environment except the project and
torch (``TORCH_SPEC`` picks torch: the local CPU wheel here, the machine's own on a GPU, whose
CUDA companions are not pinned either). `make install` installs it as pip constraints, so the
ranges in ``pyproject.toml`` stay what a ``pip install`` of the package honours, and the
environment `make test` runs in is the locked one exactly (``check`` fails the install where it
is not).

    python scripts/lock.py write [--python VENV/bin/python]   # make lock: pin what is installed
    python scripts/lock.py check                              # installed == lock, or exit 1
    python scripts/lock.py diff [--python ...]                # what a newer install changed
    python scripts/lock.py tested-versions [--write]          # README's "Tested versions" line
    python scripts/lock.py gpu-wheels [--dest D] [--have F]   # the lock's wheels a GPU box lacks
    python scripts/lock.py installed > F                      # (there) what it has, for --have

No hashes: the lock is installed on CPU machines with a local torch wheel and on GPU machines
from carried wheels for another Python, so a hash would hold for one platform's files only.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
README = ROOT / "README.md"
PROJECT = "merge-harness"
# Chosen by TORCH_SPEC, not locked: torch itself and what only its CUDA builds pull in.
UNLOCKED = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
# README's "Tested versions" names these, in this order (the rest are in the lock).
HEADLINE = (
    "torch",
    "transformers",
    "mergekit",
    "lm-eval",
    "trl",
    "peft",
    "optuna",
    "duckdb",
    "datasets",
    "pandas",
    "huggingface-hub",
)
TESTED_HEADING = "## Tested versions"

_INSTALLED = (
    "import importlib.metadata as m, json, platform; "
    "print(json.dumps({'python': platform.python_version(), "
    "'dists': {d.metadata['Name']: d.version for d in m.distributions()}}))"
)


def normalise(name: str) -> str:
    """PEP 503: the name pip and the index compare."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(python: str | None = None) -> tuple[str, dict[str, str]]:
    """(Python version, {normalised name: version}) of this environment (``importlib.metadata``)
    or of another interpreter's."""
    if python is None:
        import importlib.metadata

        dists = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions()}
        return platform.python_version(), {normalise(k): v for k, v in dists.items()}
    out = subprocess.run([python, "-c", _INSTALLED], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    return found["python"], {normalise(k): v for k, v in found["dists"].items()}


def pinned(dists: dict[str, str]) -> dict[str, str]:
    """What the lock holds of an environment: all but the project and torch's own."""
    return {k: v for k, v in sorted(dists.items()) if k != PROJECT and not UNLOCKED.match(k)}


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalise(name)] = version
    return pins


def lock_python(path: Path = LOCK) -> str | None:
    match = re.search(r"^# Python (\S+)", path.read_text(), re.M)
    return match[1] if match else None


def write(python: str | None, path: Path = LOCK) -> None:
    version, dists = installed(python)
    header = [
        "# The exact versions `make test` passed with: pip constraints for `make install`.",
        "# Written by `scripts/lock.py write` from an installed environment; `make lock` re-resolves it.",
        f"# Python {version} on {platform.machine()}. torch is chosen by TORCH_SPEC (torch==2.13.0 on CPU).",
    ]
    body = [f"{name}=={ver}" for name, ver in pinned(dists).items()]
    path.write_text("\n".join(header + body) + "\n")


def differences(lock: dict[str, str], dists: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    """(name, locked version, installed version) for every distribution where they differ."""
    have = pinned(dists)
    return [
        (name, lock.get(name), have.get(name))
        for name in sorted(set(lock) | set(have))
        if lock.get(name) != have.get(name)
    ]


def diff_table(rows: list[tuple[str, str | None, str | None]]) -> str:
    if not rows:
        return "The installed versions are the lock's (requirements.lock).\n"
    lines = ["| package | requirements.lock | installed |", "|---|---|---|"]
    lines += [f"| {name} | {old or 'not locked'} | {new or 'not installed'} |" for name, old, new in rows]
    return f"{len(rows)} packages differ from requirements.lock:\n\n" + "\n".join(lines) + "\n"


def tested_versions(lock: dict[str, str] | None = None, python: str | None = None) -> str:
    """The README's line, from the lock (torch: the CPU spec `make install` uses)."""
    lock = lock if lock is not None else read_lock()
    python = python or lock_python() or "?"
    parts = [f"Python {python}", "torch 2.13.0 (CPU)"]
    parts += [f"{name} {lock[name]}" for name in HEADLINE if name in lock]
    return (
        ", ".join(parts)
        + "; every other package as pinned in [`requirements.lock`](requirements.lock)"
        + " (re-lock: `make lock`)."
    )


def readme_section(text: str) -> str | None:
    """The paragraph under the README's "Tested versions" heading."""
    match = re.search(rf"^{re.escape(TESTED_HEADING)}\n\n(.*?)(?:\n\n|\n*\Z)", text, re.M | re.S)
    return " ".join(match[1].split()) if match else None


def write_readme(line: str, path: Path = README) -> None:
    text = path.read_text()
    old = re.search(rf"^{re.escape(TESTED_HEADING)}\n\n(.*?)(?=\n\n|\n*\Z)", text, re.M | re.S)
    if old is None:
        raise SystemExit(f"{path} has no {TESTED_HEADING!r} section")
    path.write_text(text[: old.start(1)] + _wrap(line) + text[old.end(1) :])


def _wrap(line: str, width: int = 100) -> str:
    out, current = [], ""
    for word in line.split():
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return "\n".join([*out, current])


# The lent GPU machine (no registry) has torch 2.11, transformers 5.17, huggingface_hub 1.33,
# peft, accelerate, pandas, pyarrow and what they need: not carried unless `--have` says more.
GPU_BOX_HAS = re.compile(
    r"^(huggingface-hub|hf-xet|peft|accelerate|pandas|pyarrow|numpy|safetensors|filelock|fsspec|"
    r"jinja2|markupsafe|networkx|sympy|mpmath|typing-extensions|packaging|pyyaml|requests|urllib3|"
    r"idna|certifi|charset-normalizer|tqdm|psutil|python-dateutil|pytz|six|h11|anyio|sniffio)$"
)
# Carried at the lock's version whatever the machine has: what the harness is tested with.
GPU_LOCKED = re.compile(
    r"^(transformers|tokenizers|lm-eval|mergekit|trl|optuna|datasets|duckdb|pydantic|pydantic-core)$"
)
# Imported by none of a search, `harness doctor` and bench.gpu (the report's plotly,
# PostgreSQL's SQLAlchemy and psycopg, kernels, the test tools, pip's own; httpx2 and
# httpcore2 serve huggingface_hub 2, which stays the machine's 1.33).
GPU_NOT_NEEDED = re.compile(
    r"^(plotly|sqlalchemy|alembic|mako|psycopg|psycopg-binary|kernels|selenium|trio-websocket|"
    r"wsproto|websocket-client|pytest|pluggy|iniconfig|ruff|pip|setuptools|wheel|gguf|tomlkit|"
    r"httpx2|httpcore2)$"
)
GPU_PYTHON = "3.12"
GPU_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
    "any",
)


def gpu_carry(pins: dict[str, str], have: dict[str, str] | None) -> dict[str, str]:
    """The lock's packages a GPU machine needs carried: not what it has (``have``: its
    ``scripts/lock.py installed`` output; else the known list), except the tested core at the
    lock's version, and nothing no search imports."""
    out = {}
    for name, version in pins.items():
        if GPU_NOT_NEEDED.match(name):
            continue
        present = (have or {}).get(name) if have is not None else ("*" if GPU_BOX_HAS.match(name) else None)
        if present is None or (GPU_LOCKED.match(name) and present != version):
            out[name] = version
    return out


def gpu_wheels(dest: Path, carry: dict[str, str]) -> list[Path]:
    """Download the wheels of ``carry`` for the GPU machine's Python (building the pure-Python
    ones PyPI has as source archives only). On the machine: ``pip install --no-index --no-deps
    DEST/*.whl``, then ``pip install --no-deps --no-build-isolation -e .``."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    platforms = [arg for tag in GPU_PLATFORMS for arg in ("--platform", tag)]
    for name, version in carry.items():
        spec = f"{name}=={version}"
        binary = subprocess.run(
            [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", GPU_PYTHON,
             *platforms, "-d", str(dest), spec],
            capture_output=True, text=True,
        )  # fmt: skip
        if binary.returncode != 0:  # an sdist only: fine when it builds a py3-none-any wheel
            built = Path(tempfile.mkdtemp())
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(built), spec], check=True)
            for wheel in built.glob("*.whl"):
                if not wheel.name.endswith("-none-any.whl"):
                    raise SystemExit(f"{spec}: no wheel for Python {GPU_PYTHON} on {GPU_PLATFORMS[0]}")
                shutil.move(str(wheel), dest / wheel.name)
    return sorted(dest.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("write", "check", "diff"):
        command = sub.add_parser(name)
        command.add_argument("--python", help="the environment's interpreter (default: this one)")
    readme = sub.add_parser("tested-versions")
    readme.add_argument("--write", action="store_true", help="put the line into README.md")
    wheels = sub.add_parser("gpu-wheels")
    wheels.add_argument("--dest", default=".gpu-wheels", help="folder for the wheels")
    wheels.add_argument("--have", help="JSON of what the machine has (`lock.py installed` run there)")
    sub.add_parser("installed")
    args = parser.parse_args(argv)

    if args.command == "installed":  # stdlib only: runs on a machine with none of the lock
        print(json.dumps(installed()[1], indent=0, sort_keys=True))
        return 0
    if args.command == "gpu-wheels":
        have = json.loads(Path(args.have).read_text()) if args.have else None
        found = gpu_wheels(Path(args.dest), gpu_carry(read_lock(), have))
        size = sum(f.stat().st_size for f in found)
        for f in found:
            print(f"{f.stat().st_size / 2**20:7.2f} MiB  {f.name}")
        print(f"{len(found)} wheels, {size / 2**20:.1f} MiB in {args.dest}")
        return 0

    if args.command == "write":
        write(args.python)
        print(f"{LOCK.name}: {len(read_lock())} packages pinned")
        return 0
    if args.command == "tested-versions":
        line = tested_versions()
        if args.write:
            write_readme(line)
        print(line)
        return 0
    _, dists = installed(args.python)
    rows = differences(read_lock(), dists)
    if args.command == "diff":
        print(diff_table(rows), end="")
        return 0
    if rows:  # check
        print(f"the environment is not requirements.lock: {diff_table(rows)}", file=sys.stderr, end="")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
