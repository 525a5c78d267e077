"""The shipped default model (`assets/eve-tiny`): its files, tokenizer and processor, and its committed evaluation.

The checks on `eval.json` are consistency checks of committed files, not measurements: `eval.json` is what
`python -m recipes.default_model` (through `model.evaluation`) measured on the exported checkpoint, 200 held-out
samples per task, levels 0-2, text anywhere, and no change to the code can make them fail; a re-export can. They hold
a re-made model to the shipped figures and the issue's targets, and the model card to the file it was written from.
What the model answers now is measured by the app tests (`tests/e2e/test_app_client.py`) and the evaluation runner.
"""

import json
from pathlib import Path

import pytest
from transformers import AutoProcessor, AutoTokenizer

import model.auto  # noqa: F401  (registers eve-qwen2)
from model.evaluation.runner import format_table
from model.shared import IMAGE_TOKEN
from recipes.default_model.export import EVAL_LEVELS, TARGETS, met, targets_table

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "eve-tiny"
EVAL = json.loads((ASSETS / "eval.json").read_text())
ROWS = {r["task"]: r for r in EVAL["results"] if not r.get("variant") and r["spread"] == 1.0}
# The shipped model's figures that the suite holds it to (this checkpoint's eval.json, rounded down): a re-export
# must not fall below them. Targets it does not meet are listed in NOT_MET and reported as expected failures, so the
# suite shows them until a model meets them (see the model card for the learning curve and the CPU-hours predicted).
FLOORS = {
    ("ocr", "exact"): 0.95,
    ("ocr", "cer"): 0.007,
    ("poster", "exact"): 0.96,
    ("webpage", "field_accuracy"): 0.99,
    ("scene", "exact"): 0.97,
}
NOT_MET: set[tuple[str, str]] = set()


def test_eval_covers_every_task_at_levels_0_to_2_with_text_anywhere():
    assert set(ROWS) == set(TARGETS)
    for row in ROWS.values():
        assert row["level"] == EVAL_LEVELS and row["spread"] == 1.0 and row["metrics"]["n"] >= 200


@pytest.mark.parametrize("task, metric", sorted(FLOORS))
def test_committed_eval_json_keeps_the_shipped_floors(task, metric):
    """A re-exported model must not ship figures below this checkpoint's (a check of the committed file)."""
    value = ROWS[task]["metrics"][metric]
    assert value >= FLOORS[task, metric] if metric != "cer" else value <= FLOORS[task, metric]


@pytest.mark.parametrize("task, metric", sorted((t, m) for t, rules in TARGETS.items() for m in rules))
def test_committed_eval_json_meets_the_targets_of_issue_13(task, metric):
    """The shipped figures against the targets the default model was made for (a check of the committed file)."""
    value = ROWS[task]["metrics"][metric]
    if (task, metric) in NOT_MET:
        assert not met(value, TARGETS[task][metric])  # a better model: move it out of NOT_MET
        pytest.xfail(f"{task} {metric} {value:.3f} misses the target {TARGETS[task][metric]} (see the model card)")
    assert met(value, TARGETS[task][metric]), f"{task} {metric} {value:.3f} misses {TARGETS[task][metric]}"


def test_the_model_card_reports_the_figures_of_its_eval_json():
    """The card's two tables are rendered from eval.json by the export: edited or stale, they would disagree."""
    card = (ASSETS / "README.md").read_text()
    assert targets_table(EVAL["results"]) in card
    assert format_table(EVAL["results"]) in card


def test_off_grid_reading_is_reported():
    variants = {r["variant"] for r in EVAL["results"] if r.get("variant")}
    assert variants == {"pixel-offset", "proportional"}


def test_it_carries_the_fine_tuning_defaults_the_export_writes():
    from model.shared import finetune_defaults
    from recipes.default_model.export import SHIPPED_FINETUNE_DEFAULTS

    assert finetune_defaults(ASSETS) == SHIPPED_FINETUNE_DEFAULTS


def test_weights_fit_the_size_budget():
    assert (ASSETS / "model.safetensors").stat().st_size < 40_000_000


def test_image_placeholder_is_its_own_token():
    config = json.loads((ASSETS / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(ASSETS))
    assert config["image_token_id"] != config["pad_token_id"]
    assert tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == config["image_token_id"]
    assert IMAGE_TOKEN in tokenizer.all_special_tokens  # never produced by decoding an answer
    assert tokenizer.pad_token_id == config["pad_token_id"]


def test_closed_vocabulary_words_ship_with_the_processor():
    processor = AutoProcessor.from_pretrained(ASSETS)
    assert {"red", "triangle", "top", "left", "Title", "home"} <= set(processor.whole_words)
