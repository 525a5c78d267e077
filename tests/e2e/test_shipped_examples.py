"""The app's example images, each asked as a fresh chat of the shipped default model, as a click on one does; and
of the work-in-progress checkpoint kept beside it (`checkpoints/eve-tiny-visitor`), whose README claims the same."""

import pytest

from scripts.check_examples import ROOT, check
from tests.e2e.helpers import MODEL

KEPT_CHECKPOINT = str(ROOT / "checkpoints" / "eve-tiny-visitor")


@pytest.mark.parametrize("model", [MODEL, KEPT_CHECKPOINT], ids=["shipped", "kept"])
def test_every_example_image_is_answered_right(model):
    rows = check(model)
    assert len(rows) == 12
    wrong = [(r["image"], r["answer"], r["expected"]) for r in rows if not r["right"]]
    assert not wrong, wrong
