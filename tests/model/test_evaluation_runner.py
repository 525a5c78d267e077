"""The evaluation entry point: a perfect answerer scores perfect, a wrong one scores wrong, the CLI writes JSON."""

import json

import pytest

from model.evaluation import runner
from model.evaluation.__main__ import main
from model.synthetic import TASKS


@pytest.mark.parametrize("task", TASKS)
def test_perfect_answers_score_perfect_and_wrong_answers_score_wrong(task, monkeypatch):
    monkeypatch.setattr(runner, "answer_batch", lambda model, processor, samples, n: [s.answer for s in samples])
    perfect = runner.evaluate_task(None, None, task, n=20, level=[0, 1, 2])["metrics"]
    main = runner.MAIN_METRIC[task]
    assert perfect[main] == 1.0 and perfect.get("cer", 0.0) == 0.0

    monkeypatch.setattr(runner, "answer_batch", lambda model, processor, samples, n: ["no idea"] * len(samples))
    wrong = runner.evaluate_task(None, None, task, n=20, level=[0, 1, 2])["metrics"]
    assert wrong[main] == 0.0 and wrong.get("cer", 1.0) > 0.5


def test_cli_runs_a_real_checkpoint_and_writes_json(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "--checkpoint",
                str(tiny_checkpoint),
                "--task",
                "ocr",
                "--n",
                "3",
                "--max-new-tokens",
                "4",
                "--spread",
                "0.5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())["results"]
    assert results[0]["task"] == "ocr" and results[0]["metrics"]["n"] == 3
    assert results[0]["spread"] == 0.5
    assert "ocr" in capsys.readouterr().out


def test_table_names_the_levels_and_placement_of_each_row(monkeypatch):
    monkeypatch.setattr(runner, "answer_batch", lambda model, processor, samples, n: [s.answer for s in samples])
    mixed = runner.evaluate_task(None, None, "ocr", n=4, level=[0, 1, 2])
    words = runner.evaluate_task(None, None, "ocr", n=4, level=0, spread=0.5)
    header, first, second = runner.format_table([mixed, words]).splitlines()
    assert header.split()[:4] == ["task", "levels", "spread", "n"]
    assert first.split()[:4] == ["ocr", "0,1,2", "1", "4"] and second.split()[:4] == ["ocr", "0", "0.5", "4"]


def test_spread_zero_evaluates_words_placed_at_the_first_free_patch(monkeypatch):
    seen = []
    monkeypatch.setattr(
        runner,
        "answer_batch",
        lambda model, processor, samples, n: seen.extend(samples) or [s.answer for s in samples],
    )
    assert runner.evaluate_task(None, None, "ocr", n=6, level=0, spread=0)["spread"] == 0
    # Text at the top-left starting cell: ink in the first patch row, nothing in the last one.
    for sample in seen:
        gray = sample.image.convert("L")
        assert gray.crop((0, 0, gray.width, 16)).getextrema()[0] < 128
        assert gray.crop((0, gray.height - 16, gray.width, gray.height)).getextrema()[0] == 255
