"""Preference data: TRL formats, column checks, the seed recipe, near-duplicates, demo sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from harness.align import AlignConfig, PreferenceSource, demo_sets, logps
from harness.align.data import check_align, load_source
from harness.align.dedupe import NearDuplicateIndex, near_duplicate_mask
from harness.align.demo_sets import QAItem, pairs_from_qa, prepare_demo_preference_sets
from harness.errors import HarnessError

FIXTURES = Path(__file__).parent / "fixtures" / "align"


def test_loads_standard_jsonl_and_parquet(tmp_path):
    src = load_source(PreferenceSource(path=str(FIXTURES / "toy_standard.jsonl")))
    assert len(src) == 16 and not src.conversational and len(src.fingerprint) == 64
    parquet = tmp_path / "toy.parquet"
    src.dataset.to_parquet(str(parquet))
    again = load_source(PreferenceSource(path=str(parquet), limit=5))
    assert len(again) == 5 and again.name == "toy"


def test_loads_conversational_with_implicit_prompt_and_saved_folder(tmp_path):
    src = load_source(PreferenceSource(path=str(FIXTURES / "toy_chat_implicit.jsonl")))
    assert src.conversational and "prompt" not in src.dataset.column_names
    folder = tmp_path / "saved"
    src.dataset.save_to_disk(str(folder))
    assert len(load_source(PreferenceSource(path=str(folder)))) == 8


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([{"prompt": "p", "chosen": "a"}], "missing column 'rejected'"),
        ([{"chosen": "a", "rejected": "b"}], "missing column 'prompt'"),
        ([{"prompt": "p", "chosen": 1, "rejected": "b"}], "'chosen' holds int"),
        (
            [{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}],
            "'rejected' is not a list of",
        ),
    ],
)
def test_bad_columns_are_named(tmp_path, rows, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(HarnessError, match=needle):
        load_source(PreferenceSource(path=str(path)))


def test_malformed_and_unsupported_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"\n', encoding="utf-8")
    with pytest.raises(HarnessError, match="malformed JSON at line 1"):
        load_source(PreferenceSource(path=str(bad)))
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(HarnessError, match="unsupported file type"):
        load_source(PreferenceSource(path=str(csv)))


def test_uncached_hub_id_is_a_clear_error():
    with pytest.raises(HarnessError, match="hub dataset could not be loaded"):
        load_source(PreferenceSource(path="nobody/no-such-preference-set"))


def test_check_align_counts_and_steps():
    toy = str(FIXTURES / "toy_standard.jsonl")
    cfg = AlignConfig(method="sdpo", data=[{"path": toy, "name": "a", "limit": 3}], steps=3)
    assert check_align(cfg) == {"a": 3}
    with pytest.raises(HarnessError, match="steps = 4 but the preference data has only 3"):
        check_align(cfg.model_copy(update={"steps": 4}))


def test_near_duplicates_are_removed():
    texts = [
        "Which gas do plants absorb from the air during photosynthesis?",
        "Which gas do plants absorb from the air during photosynthesis ?",  # punctuation only
        "What is the boiling point of water at sea level in degrees Celsius?",
        "which gas do plants absorb from the air during photosynthesis",  # case only
    ]
    assert near_duplicate_mask(texts) == [True, False, True, False]
    index = NearDuplicateIndex()
    index.add(texts[2])
    assert index.contains("What is the boiling point of water at sea level in degrees Celsius")
    assert not index.contains(texts[0])


def _items() -> list[QAItem]:
    return [
        QAItem("Which planet is known as the red planet?", ("Venus", "Mars", "Jupiter"), 1),
        QAItem("Which planet is known as the red planet ?", ("Mars", "Venus", "Saturn"), 0),
        QAItem("What do bees make from nectar?", ("honey", "wax", "silk"), 0),
        QAItem("Which organ pumps blood through the body?", ("lungs", "liver", "heart"), 2),
    ]


def test_seed_recipe_gold_is_chosen_wrong_is_rejected():
    report: dict[str, int] = {}
    pairs = pairs_from_qa(_items(), seed=1, report=report, list_options=True)
    assert report == {"items": 4, "near_duplicates": 1, "contaminated": 0, "pairs": 3}
    golds = {"Mars", "honey", "heart"}
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "user" and "Options:" in pair["prompt"][0]["content"]
        assert pair["chosen"][0]["content"] in golds
        assert pair["rejected"][0]["content"] not in golds
    # Deterministic for a seed.
    assert pairs_from_qa(_items(), seed=1, list_options=True) == pairs
    # Default: the question alone; the options are scored as continuations.
    assert pairs_from_qa(_items(), seed=1)[0]["prompt"][0]["content"] == _items()[0].question


def test_seed_recipe_model_choice_and_standard_format():
    # The "model" prefers the longest option: the rejected one is its favourite wrong answer.
    def scorer(prompt, options):
        return [len(o) for o in options]

    pairs = pairs_from_qa(_items(), scorer=scorer, conversational=False)
    assert pairs[0]["rejected"] == " Jupiter" and pairs[0]["chosen"] == " Mars"
    assert pairs[0]["prompt"].endswith("Answer:")


def test_seed_recipe_drops_scored_benchmark_items():
    exclude = NearDuplicateIndex()
    exclude.add("What do bees make from nectar?")
    report: dict[str, int] = {}
    pairs = pairs_from_qa(_items(), exclude=exclude, report=report)
    assert report["contaminated"] == 1 and len(pairs) == 2


def _fake_demo_datasets(root: Path) -> None:
    """A few rows in the real offline schemas (SciQ; an ARC item that overlaps one)."""
    sciq = [
        {
            "question": f"Which particle number {i} carries a negative charge?",
            "correct_answer": "electron",
            "distractor1": "proton",
            "distractor2": "neutron",
            "distractor3": "photon",
            "support": "",
        }
        for i in ("one", "two")
    ] + [
        {
            "question": "What is the chemical symbol for gold?",
            "correct_answer": "Au",
            "distractor1": "Ag",
            "distractor2": "Gd",
            "distractor3": "Go",
            "support": "",
        },
        {
            "question": "Which particle number one carries a negative charge ?",  # near-duplicate
            "correct_answer": "electron",
            "distractor1": "proton",
            "distractor2": "neutron",
            "distractor3": "quark",
            "support": "",
        },
    ]
    Dataset.from_list(sciq).save_to_disk(str(root / "sciq/none/validation"))
    arc = [
        {
            "id": "x",
            "question": "What is the chemical symbol for gold?",
            "choices": {"text": ["Au", "Ag"], "label": ["A", "B"]},
            "answerKey": "A",
        }
    ]
    Dataset.from_list(arc).save_to_disk(str(root / "ai2_arc/ARC-Challenge/validation"))


def test_demo_sets_are_built_once_and_decontaminated(isolated_home, monkeypatch, tmp_path):
    root = tmp_path / "datasets"
    _fake_demo_datasets(root)
    monkeypatch.setattr("harness.assets.demo_datasets_dir", lambda home=None: root)
    paths = prepare_demo_preference_sets(["sciq"])
    path = paths["sciq"]
    assert path.parent == isolated_home / "preference"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # 4 items: 1 near-duplicate, 1 overlapping ARC -> 2 pairs.
    assert len(rows) == 2
    assert all("gold" not in r["prompt"][0]["content"] for r in rows)
    meta = json.loads(path.with_suffix(".meta.json").read_text(encoding="utf-8"))
    assert meta["near_duplicates"] == 1 and meta["contaminated"] == 1
    # demo:<set> resolves to the cached file without rebuilding.
    monkeypatch.setattr(demo_sets, "scored_benchmark_index", None)  # would fail if rebuilt
    src = load_source(PreferenceSource(path="demo:sciq"))
    assert len(src) == 2 and src.conversational and src.location == str(path)


def test_demo_sets_need_the_offline_datasets(isolated_home, monkeypatch):
    monkeypatch.setattr("harness.assets.demo_datasets_dir", lambda home=None: None)
    with pytest.raises(HarnessError, match="harness assets"):
        load_source(PreferenceSource(path="demo:piqa"))


def test_demo_sets_never_read_scored_benchmarks():
    scored = ("ai2_arc", "hellaswag", "mmlu")
    for spec in demo_sets.DEMO_SETS.values():
        assert not any(s in spec.dataset_dir for s in scored)


def test_completion_logps_equal_per_row_scoring_and_skip_prompt_logits(tiny_models):
    """Batched, left-padded, LM head on the completion positions only = one row at a time, in full."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_models["base"])
    tok = AutoTokenizer.from_pretrained(tiny_models["base"])
    rows = [
        {"prompt": "Question: what is the capital of France, in a few words?\nAnswer:", "chosen": " Paris"},
        {"prompt": "Q: 2+2?", "chosen": " four, and that is a long and careful answer"},
        {"prompt": "Which gas do plants take in?", "chosen": ""},
        {"prompt": "x", "chosen": " y z"},
    ]
    head_positions: list[int] = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: head_positions.append(args[0].shape[1])
    )
    got = logps.completion_logps(model, tok, rows, "chosen", batch_size=4)
    hook.remove()

    expected = []
    for row in rows:
        prompt, completion = logps.tokenize_pair(tok, row["prompt"], row["chosen"])
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        picked = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
        expected.append(float(picked[len(prompt) - 1 :].sum()))
    assert got == pytest.approx(expected, abs=1e-4)
    longest_completion = max(len(logps.tokenize_pair(tok, r["prompt"], r["chosen"])[1]) for r in rows)
    assert head_positions == [longest_completion + 1]
