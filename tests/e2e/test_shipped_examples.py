"""The app's example images, each asked as a fresh chat of the shipped default model, as a click on one does."""

from scripts.check_examples import check
from tests.e2e.helpers import MODEL


def test_every_example_image_is_answered_right():
    rows = check(MODEL)
    assert len(rows) == 12
    wrong = [(r["image"], r["answer"], r["expected"]) for r in rows if not r["right"]]
    assert not wrong, wrong
