"""The default model's recipe plumbing: labelled stage folders, the card's stage summary, SIGTERM forwarding."""

import json
import os
import signal
import sys
import threading
import time

import pytest

from model.train.pipeline import ForwardSignals
from recipes.default_model.export import last_finished_stage, stage_folder, training_summary


def _stage(work, name, finished, run_args, metrics):
    folder = stage_folder(work, name)
    folder.mkdir(parents=True)
    (folder / "run_args.json").write_text(json.dumps(run_args))
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")
    if finished:
        (folder / "trainer_state.json").write_text(json.dumps({"finished": True}))


def test_summary_reads_each_labelled_stage_and_its_run_args(tmp_path):
    _stage(
        tmp_path,
        "3",
        True,
        {"synthetic": ["ocr", "ocr", "ocr", "scene"], "synthetic_level": [0, 1], "lr": 1e-3},
        [{"step": 10, "loss": 2.0, "elapsed_s": 1800.0}, {"step": 20, "loss": 1.5, "eval_loss": 1.6}],
    )
    _stage(
        tmp_path,
        "3:read",
        False,
        {"synthetic": ["ocr"], "synthetic_level": [0], "lr": 5e-4, "placement_spread": [0.0, 1.0]},
        [{"step": 5, "loss": 1.2, "elapsed_s": 1800.0}],
    )
    assert stage_folder(tmp_path, "3:read") == tmp_path / "stages" / "stage-3-read"
    assert last_finished_stage(tmp_path, ["3", "3:read"]) == stage_folder(tmp_path, "3")  # 3:read is unfinished
    rows, hours = training_summary(tmp_path, ["3", "3:read"])
    assert [(r["stage"], r["data"], r["levels"], r["placement"], r["lr"], r["steps"]) for r in rows] == [
        ("3", "ocr 75 %, scene 25 %", "0,1", "1", 1e-3, 20),  # before --placement-spread: text anywhere
        ("3:read", "ocr 100 %", "0", "0→1", 5e-4, 5),
    ]
    assert rows[0]["eval_loss"] == 1.6 and hours == 1.0


CHILD = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path("got-sigterm").touch(), sys.exit(0)))
pathlib.Path("ready").touch()
time.sleep(30)
sys.exit(3)
"""


def test_forward_signals_passes_sigterm_to_the_child_running_in_its_folder(tmp_path):
    def terminate_when_ready():
        deadline = time.monotonic() + 20
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    signals = ForwardSignals()
    threading.Thread(target=terminate_when_ready, daemon=True).start()
    assert signals.run([sys.executable, "-c", CHILD], dict(os.environ), cwd=tmp_path) == 0
    assert signals.stopped and (tmp_path / "got-sigterm").exists()


def test_prepare_gives_a_dedicated_image_token_and_whole_closed_words(tmp_path):
    from transformers import AutoTokenizer

    from model.configuration_eve import EveConfig
    from model.processing_eve import EveProcessor
    from recipes.default_model.recipe import prepare, whole_words

    tokenizer_dir, config_file = prepare(tmp_path)
    config = json.loads(config_file.read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert config["image_token_id"] == tokenizer.convert_tokens_to_ids("<|image_pad|>") != config["pad_token_id"]
    assert config["vocab_size"] >= len(tokenizer)
    vocab = tokenizer.get_vocab()
    assert [w for w in whole_words() if "\u0120" + w not in vocab] == []  # every closed word is one token
    assert EveProcessor.from_pretrained(tokenizer_dir, config=EveConfig(**config)).whole_words == tuple(
        sorted(whole_words(), key=lambda w: (-len(w), w))
    )  # the training stages' processors read them from this folder


def test_export_prefers_the_best_scored_checkpoint(tmp_path):
    from recipes.default_model.export import export_source, met, targets_table

    _stage(tmp_path, "3", True, {}, [])
    assert export_source(tmp_path, ["3"]) == stage_folder(tmp_path, "3")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "best.json").write_text(json.dumps({"step": 400, "score": 0.5}))
    assert export_source(tmp_path, ["3"]) == tmp_path / "best"
    assert met(0.9, (">=", 0.9)) and met(0.03, ("<=", 0.03)) and not met(0.031, ("<=", 0.03))
    rows = [{"task": "ocr", "metrics": {"exact": 0.95, "cer": 0.05}}, {"task": "ocr", "variant": "proportional"}]
    assert targets_table(rows).splitlines()[2:] == [
        "| ocr | exact | >= 0.9 | 0.950 | yes |",
        "| ocr | cer | <= 0.03 | 0.050 | no |",
    ]


def test_the_card_names_the_exported_stage_without_the_training_machines_path(tmp_path):
    from recipes.default_model.export import source_label

    best = tmp_path / "best"
    best.mkdir()
    (best / "run_args.json").write_text(json.dumps({"output_dir": "/home/someone/runs/eve-tiny/stages/stage-3-more"}))
    assert source_label(best, 1600) == "best (step 1600 of stage-3-more)"
    assert source_label(best, None) == "best"


def test_the_offgrid_recipe_is_a_trial_that_never_exports_over_the_shipped_model(tmp_path, capsys):
    from model.train.args import build_parser
    from recipes.default_model.recipe import COMMON, RECIPES, STAGES, main, tracked_stage

    assert RECIPES["grid"] is STAGES and tracked_stage("grid") == list(STAGES)[-1]  # the default is the shipped recipe
    with pytest.raises(SystemExit) as exit_info:
        main(["--recipe", "offgrid", "--work", str(tmp_path)])  # no --assets: would overwrite assets/eve-tiny
    assert exit_info.value.code == 2 and "--assets" in capsys.readouterr().err
    ((name, flags),) = RECIPES["offgrid"].items()
    parsed = build_parser().parse_args(
        ["--output-dir", "o", "--from-scratch", "c", "--tokenizer", "t", *COMMON.split(), *flags.split()]
    )
    assert name.startswith("3:") and parsed.ocr_jitter == [1, 8] and parsed.fixed_place_share == 0.25


def test_every_recipe_stage_is_a_valid_training_command_and_fonts_opens_place_before_size():
    from model.train.args import parse_args
    from recipes.default_model.recipe import COMMON, RECIPES

    base = ["--output-dir", "o", "--base", "b", *COMMON.split()]
    parsed = {
        (recipe, name): parse_args([*base, *flags.split()])
        for recipe, stages in RECIPES.items()
        for name, flags in stages.items()
    }
    fonts = [parsed["fonts", name] for name in RECIPES["fonts"]]
    assert [name for name in RECIPES["fonts"]] == [
        "3:offgrid",
        "3:anchor",
        "3:place",
        "3:sizes",
        "3:fonts",
        "3:mix",
        "3:settle",
        "3:shapes",
    ]
    _, anchor, place, sizes, mixed, more, settle, shapes = fonts
    assert anchor.ocr_visitor_spread == [0.0, 0.0] and anchor.synthetic == ["ocr"]  # one place and size
    assert place.ocr_visitor_spread == [0.0, 1.0] and place.ocr_visitor_size_spread == [0.0, 0.0]  # place first
    assert sizes.ocr_visitor_spread == [1.0, 1.0] and sizes.ocr_visitor_size_spread == [0.0, 1.0]  # then the size
    assert mixed.ocr_visitor_size_spread == [] and set(mixed.synthetic) == {"ocr", "poster", "webpage", "scene"}
    assert all(stage.ocr_visitor_anchor_share > 0 for stage in (place, sizes, mixed))  # the anchor is kept
    assert more.ocr_visitor_small_share > 0 and more.synthetic.count("poster") > mixed.synthetic.count("poster")
    assert settle.synthetic == more.synthetic and settle.lr < more.lr and settle.end_at_step is None  # cools to zero
    assert shapes.ocr_visitor_canvas_share > 0 and settle.ocr_visitor_canvas_share == 0  # the canvas opens last
