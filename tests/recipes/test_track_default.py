"""The default-model tracker ranks checkpoints by the tasks with text anywhere, not by fixed-place OCR."""

import pytest

from model.synthetic.render import visitor_fonts_installed
from recipes.default_model.track import (
    ANCHOR_OCR,
    FIXED_PLACE_OCR,
    HELD_OUT_FAMILY_ANCHOR_OCR,
    HELD_OUT_FAMILY_CANVAS_OCR,
    HELD_OUT_FAMILY_OCR,
    HELD_OUT_FAMILY_PLACE_OCR,
    HELD_OUT_FAMILY_SIZE_OCR,
    HELD_OUT_FONT_OCR,
    HELD_OUT_LAYOUT_POSTER,
    HELD_OUT_LAYOUT_SCENE,
    OFF_GRID_OCR,
    UNSEEN_LAYOUT_POSTER,
    UNSEEN_LAYOUT_SCENE,
    score_of,
)


def _row(task: str, **metrics: float) -> dict:
    return {"task": task, "metrics": metrics}


def test_the_score_is_the_mean_main_metric_and_ignores_fixed_place_ocr():
    results = [
        _row("ocr", exact=0.5, cer=0.1),
        _row("poster", exact=0.0),
        _row("webpage", field_accuracy=0.8, exact=0.1),
        _row("scene", exact=0.9),
    ]
    assert abs(score_of(results) - (0.5 + 0.0 + 0.8 + 0.9) / 4) < 1e-9
    assert score_of(results + [_row(FIXED_PLACE_OCR, exact=1.0, cer=0.0)]) == score_of(results)
    # Off-grid rows (issue 31) are followed in the curve but do not change which checkpoint ranks best.
    off_grid = [_row(OFF_GRID_OCR, exact=0.0, cer=0.9), _row(HELD_OUT_FONT_OCR, exact=0.0, cer=1.0)]
    off_grid += [_row(UNSEEN_LAYOUT_SCENE, exact=0.1), _row(UNSEEN_LAYOUT_POSTER, exact=0.0)]
    off_grid += [_row(HELD_OUT_LAYOUT_SCENE, exact=0.2), _row(HELD_OUT_LAYOUT_POSTER, exact=0.0)]
    families = (HELD_OUT_FAMILY_OCR, ANCHOR_OCR, HELD_OUT_FAMILY_ANCHOR_OCR)  # the fonts recipe's rows
    families += (HELD_OUT_FAMILY_PLACE_OCR, HELD_OUT_FAMILY_SIZE_OCR, HELD_OUT_FAMILY_CANVAS_OCR)
    off_grid += [_row(task, exact=0.0, cer=0.8) for task in families]
    assert score_of(results + off_grid) == score_of(results)


@pytest.mark.skipif(not visitor_fonts_installed(), reason="visitor fonts not installed: run `make fonts`")
def test_the_tracker_evaluates_every_row_it_names_once():
    """A row named in `UNSCORED` (`ocr_wide_canvas` among them) but never evaluated would vanish from the curve
    silently: one sample apiece on the shipped model."""
    from model.loading import load_pretrained
    from recipes.default_model.track import TASKS, UNSCORED, evaluate

    model, processor = load_pretrained("assets/eve-tiny")[:2]
    names = [row["task"] for row in evaluate(model, processor, 1)]
    assert sorted(names) == sorted({*TASKS, *UNSCORED})
