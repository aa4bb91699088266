"""The GitHub workflows (issue 12): CI runs the README's test command; the nightly job is
scheduled on a self-hosted GPU runner, takes the storage URL from a secret, runs `harness
nightly` with options that exist, uploads the DuckDB file and the report, publishes Pages."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from harness.cli import app

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"


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
