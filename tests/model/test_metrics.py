"""Tests for `model.evaluation`: answer parsing, per-task scores and aggregation."""

import random

import pytest

from model.evaluation import (
    MAIN_METRIC,
    aggregate,
    char_error_rate,
    levenshtein,
    normalize,
    parse_scene,
    parse_webpage,
    score_sample,
)
from model.synthetic import TASKS, generate_sample

PAGE = {"site": "bookly", "links": ["home", "shop", "help"], "headline": "Fresh Reads", "button": "join"}
SCENE = {
    "count": 2,
    "objects": [
        {"position": "top center", "color": "red", "shape": "circle"},
        {"position": "center", "color": "blue", "shape": "square"},
    ],
}


def test_levenshtein():
    assert levenshtein("kitten", "sitting") == levenshtein("sitting", "kitten") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("same", "same") == 0


def test_char_error_rate_is_capped():
    assert char_error_rate("sunset rivr", "sunset river") == pytest.approx(1 / 12)
    assert char_error_rate("x" * 100, "abc") == 1.0
    assert char_error_rate("", "abc") == 1.0
    assert char_error_rate("", "") == 0.0


def test_normalize():
    assert normalize("  Sunset \n River. ") == "sunset river"
    assert normalize(None) == ""


def test_ocr_scores():
    assert score_sample("ocr", "SUNSET  river.", {"text": "sunset\nriver"}) == {"exact": 1.0, "cer": 0.0}
    wrong = score_sample("OCR", "sunset rivre", {"text": "sunset river"})
    assert wrong["exact"] == 0.0 and wrong["cer"] > 0.0
    assert score_sample("ocr", "", {"text": "sunset"})["cer"] == 1.0


def test_poster_scores():
    target = {"title": "JAZZ NIGHT", "date": "MAR 12"}
    assert score_sample("poster", "title: jazz night. date: mar 12", target) == {
        "title": 1.0,
        "date": 1.0,
        "exact": 1.0,
    }
    assert score_sample("Poster", "Title: JAZZ NIGHT. Date: MAR 13.", target) == {
        "title": 1.0,
        "date": 0.0,
        "exact": 0.0,
    }
    assert score_sample("poster", "Date: MAR 12. Title: JAZZ NIGHT.", target)["exact"] == 1.0  # any field order
    assert score_sample("poster", "JAZZ NIGHT", target) == {"title": 0.0, "date": 0.0, "exact": 0.0}


def test_webpage_parsing_and_scores():
    answer = "Site: bookly. Links: home, shop, help. Headline: Fresh Reads. Button: join."
    assert parse_webpage(answer) == {**PAGE, "links": ["home", "shop", "help"], "headline": "fresh reads"}
    assert score_sample("webpage", answer, PAGE)["field_accuracy"] == 1.0
    missing = score_sample("webpage", "Site: bookly. Links: shop, home. Headline: Fresh Reads. Button: join.", PAGE)
    assert missing["links"] == pytest.approx(2 / 3)
    assert missing["field_accuracy"] == pytest.approx(5 / 6)
    assert missing["exact"] == 0.0
    extra = score_sample("webpage", "Site: bookly. Links: home, shop, help, faq. Headline: x. Button: join.", PAGE)
    assert extra["links"] == pytest.approx(3 / 4) and extra["headline"] == 0.0
    assert score_sample("Webpage", "", PAGE)["field_accuracy"] == 0.0


def test_scene_parsing_keeps_top_center_apart_from_center():
    parsed = parse_scene("2 objects. Top  Center: Red Circle. center: blue square.")
    assert parsed["count"] == 2
    assert [o["position"] for o in parsed["objects"]] == ["top center", "center"]
    assert parsed["objects"][0] == {"position": "top center", "color": "red", "shape": "circle"}


def test_scene_scores():
    perfect = score_sample("scene", "2 objects. top center: red circle. center: blue square.", SCENE)
    assert all(value == 1.0 for value in perfect.values())
    swapped = score_sample("scene", "2 objects. top center: blue circle. center: red square.", SCENE)
    assert swapped["exact"] == 0.0 and swapped["color"] == 0.0 and swapped["object"] == 0.0
    assert swapped["shape"] == swapped["position"] == swapped["count"] == 1.0
    missing = score_sample("Scene description", "1 object. top center: red circle.", SCENE)
    assert missing["count"] == 0.0 and missing["position"] == 0.5 and missing["color"] == 0.5
    extra = score_sample("scene", "3 objects. top center: red circle. center: blue square. top left: red star.", SCENE)
    assert extra["exact"] == 0.0 and extra["position"] == pytest.approx(2 / 3) and extra["color"] == 1.0


@pytest.mark.parametrize("task", TASKS)
def test_wrong_generated_answers_score_as_wrong(task):
    sample = generate_sample(task, random.Random(11), 2)
    answer, target = sample.answer, sample.target
    if task == "scene":  # change every object's colour
        colors = ["red", "blue"]
        wrong = answer
        for obj in target["objects"]:
            new = colors[0] if obj["color"] != colors[0] else colors[1]
            wrong = wrong.replace(f"{obj['position']}: {obj['color']}", f"{obj['position']}: {new}")
    else:  # misspell the first word of the content
        field = {"ocr": "text", "poster": "title", "webpage": "headline"}[task]
        word = target[field].split()[0]
        wrong = answer.replace(word, word[::-1] + "q", 1)
    scores = score_sample(task, wrong, target)
    assert scores["exact"] == 0.0
    if task == "ocr":
        assert scores["cer"] > 0.0


def test_aggregate():
    scores = [{"exact": 1.0, "cer": 0.0}, {"exact": 0.0, "cer": 0.5}]
    assert aggregate("ocr", scores) == {"exact": 0.5, "cer": 0.25, "n": 2.0}
    assert aggregate("scene", []) == {"n": 0.0}
    with pytest.raises(ValueError):
        aggregate("chart", scores)


def test_main_metric_is_reported_for_every_task():
    for task in TASKS:
        sample = generate_sample(task, random.Random(0), 0)
        assert MAIN_METRIC[task] in score_sample(task, sample.answer, sample.target)


def test_free_form_answers_score_exact_match_cer_and_token_f1():
    from model.evaluation.metrics import score_answer, token_f1

    assert score_answer("  Jazz Night. ", "jazz night") == {"exact": 1.0, "cer": 0.0, "token_f1": 1.0}
    partial = score_answer("jazz day", "jazz night")
    assert partial["exact"] == 0.0 and partial["token_f1"] == 0.5 and partial["cer"] == pytest.approx(5 / 10)
    assert token_f1("the the cat", "the cat sat") == pytest.approx(2 / 3)  # repeated words count once per match
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    assert score_answer("", "cat")["cer"] == 1.0


def test_held_out_rows_are_the_jobs_eval_split_else_a_sample_of_its_training_rows(tmp_path):
    from model.evaluation.compare import held_out_rows
    from model.synthetic import write_dataset
    from model.train.data import load_records, split_records

    data = write_dataset(tmp_path, ["ocr"], n=10, seed=2, level=0)
    rows, source = held_out_rows([data], None, eval_split=0.3, seed=5)
    _, held_out = split_records(load_records([data]), 0.3, 64, 5)  # the very rows training kept out
    assert source == "eval split" and [r.id for r in rows] == [h.load()["id"] for h in held_out]
    assert all(
        r.images[0].is_file() and r.question[0]["content"].startswith("<|image_pad|>\n") and r.expected for r in rows
    )
    sample, source = held_out_rows([data], None, eval_split=0.0, seed=5, n=4)
    assert source == "training rows" and len(sample) == 4
    assert [r.id for r in sample] == [r.id for r in held_out_rows([data], None, 0.0, seed=5, n=4)[0]]  # seeded
