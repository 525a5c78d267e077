"""Tests for `model.synthetic`: determinism, geometry, grid alignment, templates, dataset writing and speed."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.evaluation import score_sample
from model.evaluation.metrics import MAIN_METRIC
from model.synthetic import (
    IMAGE_AREA,
    IMAGE_SIZES,
    IMAGE_TOKEN,
    MAX_LEVEL,
    PATCH_SIZE,
    TASK_INSTRUCTIONS,
    TASK_KEYS,
    TASKS,
    format_answer,
    generate_sample,
    is_held_out,
    iter_samples,
    sample_at,
    word_bank,
    write_dataset,
)
from model.synthetic.__main__ import main as cli_main
from model.synthetic.render import visitor_fonts_installed
from model.synthetic.vocab import load_vocab

LEVELS = range(MAX_LEVEL + 1)
TASK_LEVELS = [(task, level) for task in TASKS for level in LEVELS]


@pytest.mark.parametrize(("task", "level"), TASK_LEVELS)
def test_same_seed_gives_same_sample(task, level):
    first, second = (generate_sample(task, random.Random(7), level) for _ in range(2))
    assert first.image.tobytes() == second.image.tobytes()
    assert first.conversations == second.conversations
    assert first.target == second.target


@pytest.mark.parametrize("task", TASKS)
def test_different_seeds_give_different_samples(task):
    images = {generate_sample(task, random.Random(seed), 1).image.tobytes() for seed in range(5)}
    assert len(images) == 5


@pytest.mark.parametrize(("task", "level"), TASK_LEVELS)
def test_image_size_needs_no_resize(task, level):
    for seed in range(5):
        image = generate_sample(task, random.Random(seed), level).image
        width, height = image.size
        assert image.mode == "RGB"
        assert image.size == IMAGE_SIZES[task]
        assert width * height == IMAGE_AREA == 192 * 192
        assert width % PATCH_SIZE == 0 and height % PATCH_SIZE == 0


@pytest.mark.parametrize(("task", "level"), TASK_LEVELS)
def test_own_answer_scores_perfectly(task, level):
    for seed in range(40):
        sample = generate_sample(task, random.Random(seed), level)
        scores = score_sample(task, sample.answer, sample.target)
        assert scores.pop("cer", 0.0) == 0.0
        assert all(value == 1.0 for value in scores.values()), (sample.answer, scores)


@pytest.mark.parametrize("task", TASKS)
def test_conversation_is_llava_format(task):
    sample = generate_sample(task, random.Random(3), 0)
    human, gpt = sample.conversations
    assert human["from"] == "human" and gpt["from"] == "gpt"
    assert human["value"].startswith(IMAGE_TOKEN + "\n")
    entry = load_vocab()["instructions"][task]
    assert human["value"][len(IMAGE_TOKEN) + 1 :] in [entry["canonical"], *entry["paraphrases"]]
    assert gpt["value"] == format_answer(task, sample.target) == sample.answer


def test_task_tables_match():
    assert set(TASK_KEYS) == set(TASK_INSTRUCTIONS) == {"OCR", "Poster", "Webpage", "Scene description"}
    assert sorted(TASK_KEYS.values()) == sorted(TASKS)
    for name, key in TASK_KEYS.items():
        assert TASK_INSTRUCTIONS[name] == load_vocab()["instructions"][key]["canonical"]
    assert generate_sample("Scene description", random.Random(0)).task == "scene"


def test_answer_templates():
    scene = {"objects": [{"position": "top left", "color": "red", "shape": "circle"}]}
    assert format_answer("scene", scene) == "1 object. top left: red circle."
    # Fixed-length and closed-vocabulary fields first: the open-vocabulary text then starts at a (nearly) fixed offset.
    assert format_answer("poster", {"title": "JAZZ NIGHT", "date": "MAR 02"}) == "Title: JAZZ NIGHT. Date: MAR 02."
    page = {"site": "bookly", "links": ["home", "shop"], "headline": "Fresh Reads", "button": "join"}
    assert format_answer("webpage", page) == "Button: join. Links: home, shop. Site: bookly. Headline: Fresh Reads."


def test_poster_dates_have_one_length_per_format():
    dates = [generate_sample("poster", random.Random(seed), 1).target["date"] for seed in range(100)]
    assert {date.split()[0].isdigit() for date in dates} == {True, False}  # "02 MAR" and "MAR 02"
    assert {len(date) for date in dates} == {6}  # the day is zero-padded (years do not fit 192 px at 16 px a glyph)
    wide = [generate_sample("poster", random.Random(seed), 1, size=(256, 128)).target["date"] for seed in range(100)]
    assert {len(date) for date in wide} == {6, 11}


def _luminance(rgb) -> float:
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def _background_and_ink(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most common colour of an image region, and the colour farthest from it."""
    pixels = region.reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    return background, pixels[np.abs(pixels - background).sum(axis=1).argmax()]


def test_grid_posters_and_site_names_are_dark_on_light():
    """Every grid task prints dark glyphs on a light ground, the polarity the default model reads; level 3 (off the
    grid) also draws light-on-dark posters and bars."""
    for level in (0, 1, 2):
        for seed in range(20):
            poster = np.asarray(generate_sample("poster", random.Random(seed), level).image.convert("RGB")).astype(int)
            background, ink = _background_and_ink(poster)
            assert _luminance(ink) < _luminance(background), (level, seed)
            page = np.asarray(generate_sample("webpage", random.Random(seed), level).image.convert("RGB")).astype(int)
            background, ink = _background_and_ink(page[: 2 * PATCH_SIZE])  # the site bar
            assert _luminance(ink) < _luminance(background), (level, seed)
    inverse = 0
    for seed in range(40):
        poster = np.asarray(generate_sample("poster", random.Random(seed), 3).image.convert("RGB")).astype(int)
        background, ink = _background_and_ink(poster)
        inverse += _luminance(ink) > _luminance(background)
    assert 0 < inverse < 40


@pytest.mark.parametrize("level", [0, 1, 2])
def test_webpage_text_is_one_character_per_patch_column_in_its_band(level):
    """The headline's glyphs fill whole patch columns, one per character, in the two rows of its band."""
    cols_seen = set()
    for seed in range(30):
        sample = generate_sample("webpage", random.Random(seed), level)
        ink = np.asarray(sample.image.convert("RGB")).astype(int)
        headline_ink = np.abs(ink - np.array([17, 24, 39])).sum(axis=2) < 30  # the headline's own colour
        headline_ink[: 2 * PATCH_SIZE] = False  # (a bar may have that colour too)
        rows = [
            r for r in range(ink.shape[0] // PATCH_SIZE) if headline_ink[r * PATCH_SIZE : (r + 1) * PATCH_SIZE].any()
        ]
        assert rows == [4, 5], (seed, rows)
        cols = [
            c
            for c in range(ink.shape[1] // PATCH_SIZE)
            if headline_ink[:, c * PATCH_SIZE : (c + 1) * PATCH_SIZE].any()
        ]
        headline = sample.target["headline"]
        assert cols[-1] - cols[0] + 1 == len(headline), (seed, headline, cols)
        cols_seen.add(cols[0])
    assert (cols_seen == {1}) == (level == 0)  # left-aligned at level 0, anywhere on the grid above


def test_level0_ocr_puts_one_character_per_patch():
    for seed in range(20):
        sample = generate_sample("ocr", random.Random(seed), 0)
        ink = np.asarray(sample.image.convert("L")) < 128
        columns = [c for c in range(ink.shape[1] // PATCH_SIZE) if ink[:, c * PATCH_SIZE : (c + 1) * PATCH_SIZE].any()]
        rows = [r for r in range(ink.shape[0] // PATCH_SIZE) if ink[r * PATCH_SIZE : (r + 1) * PATCH_SIZE].any()]
        word = sample.target["text"]
        assert columns == list(range(columns[0], columns[0] + len(word))), word
        assert len(rows) == 2 and rows[1] == rows[0] + 1, word  # 32 px glyphs: two patch rows, never a third


def test_scene_objects_fill_their_grid_cells():
    sample = generate_sample("scene", random.Random(4), 2)
    pixels = np.asarray(sample.image).astype(int)
    background = pixels[0, 0]
    positions = load_vocab()["scene"]["positions"]
    occupied = {
        positions[r * 3 + c]
        for r in range(3)
        for c in range(3)
        if (pixels[r * 64 + 32, c * 64 + 32] != background).any()
    }
    assert occupied == {obj["position"] for obj in sample.target["objects"]}


def test_stream_is_deterministic_and_shardable():
    stream = iter_samples(list(TASKS), seed=3, level=[0, 1])
    first = [next(stream) for _ in range(6)]
    again = [sample_at(i, list(TASKS), 3, level=[0, 1]) for i in range(6)]
    assert [s.image.tobytes() for s in first] == [s.image.tobytes() for s in again]
    odd = iter_samples(list(TASKS), seed=3, level=[0, 1], start=1, step=2)
    assert [next(odd).answer for _ in range(3)] == [first[i].answer for i in (1, 3, 5)]
    assert {s.level for s in first} <= {0, 1}


def test_weights_select_tasks():
    stream = iter_samples(["ocr", "scene"], seed=0, weights=[1, 0])
    assert {next(stream).task for _ in range(20)} == {"ocr"}


def test_held_out_split_uses_only_held_out_words():
    assert 0 < len(word_bank("test")) < len(word_bank("train")) < len(word_bank("all"))
    assert all(is_held_out(word) for word in word_bank("test").words)
    for seed in range(30):
        sample = generate_sample("ocr", random.Random(seed), 2, split="test")
        assert all(is_held_out(word.lower()) for word in sample.target["text"].split())


def test_made_up_words_replace_the_given_share_of_training_words():
    real = set(word_bank("all").words)
    texts = [sample_at(i, ["ocr"], 3, split="train", made_up_words=0.5).target["text"] for i in range(400)]
    made_up = [t for t in texts if t not in real]
    assert 0.4 < len(made_up) / len(texts) < 0.6
    assert all(t.isalnum() and t == t.lower() and 3 <= len(t) <= 22 for t in made_up)
    assert any(c.isdigit() for t in made_up for c in t)  # digits are read nowhere else but in poster dates
    assert texts == [sample_at(i, ["ocr"], 3, split="train", made_up_words=0.5).target["text"] for i in range(400)]
    assert all(sample_at(i, ["ocr"], 3, split="train").target["text"] in real for i in range(100))
    with pytest.raises(ValueError, match="between 0 and 1"):
        word_bank("train", 1.5)


def _ink_origin(image: Image.Image) -> tuple[int, int]:
    """(column, row) of the patch holding the top-left-most ink of a light-background image."""
    dark = np.asarray(image.convert("L")) < 128
    rows, cols = np.nonzero(dark.any(axis=1))[0], np.nonzero(dark.any(axis=0))[0]
    return int(cols[0]) // PATCH_SIZE, int(rows[0]) // PATCH_SIZE


def test_placement_spread_keeps_ocr_text_near_the_corner_and_one_is_anywhere():
    fixed = {_ink_origin(sample_at(i, ["ocr"], 4, spread=0.0).image) for i in range(40)}
    assert fixed == {(1, 0)}  # every word at the first free patch (one column of margin)
    half = [_ink_origin(sample_at(i, ["ocr"], 4, spread=0.5).image) for i in range(200)]
    anywhere = [_ink_origin(sample_at(i, ["ocr"], 4).image) for i in range(200)]
    cols, rows = IMAGE_SIZES["ocr"][0] // PATCH_SIZE, IMAGE_SIZES["ocr"][1] // PATCH_SIZE
    assert max(r for _, r in half) <= rows // 2 < max(r for _, r in anywhere)
    assert max(c for c, _ in half) <= cols // 2 + 1 < max(c for c, _ in anywhere)
    # Spread 1 is the default: the same samples as before the option existed.
    assert sample_at(7, ["ocr"], 4, spread=1.0).image.tobytes() == sample_at(7, ["ocr"], 4).image.tobytes()
    with pytest.raises(ValueError, match="spread"):
        generate_sample("ocr", random.Random(0), spread=1.5)


def test_size_override_and_validation():
    sample = generate_sample("scene", random.Random(0), 2, size=(96, 96))
    assert sample.image.size == (96, 96)
    with pytest.raises(ValueError):
        generate_sample("ocr", random.Random(0), size=(100, 96))
    with pytest.raises(ValueError):
        generate_sample("ocr", random.Random(0), level=MAX_LEVEL + 1)
    with pytest.raises(ValueError):
        generate_sample("chart", random.Random(0))


def test_write_dataset_produces_llava_json(tmp_path):
    path = write_dataset(tmp_path / "data", list(TASKS), n=8, seed=1, level=0)
    records = json.loads(path.read_text())
    assert len(records) == 8 and len({r["id"] for r in records}) == 8
    for record in records:
        assert {"id", "image", "conversations", "task", "target"} <= set(record)
        assert (path.parent / record["image"]).is_file()
        assert record["conversations"][0]["value"].startswith(IMAGE_TOKEN)
        assert score_sample(record["task"], record["conversations"][1]["value"], record["target"])["exact"] == 1.0
    first = sample_at(0, list(TASKS), 1)
    assert records[0]["conversations"] == first.conversations


def test_cli_writes_dataset(tmp_path, capsys):
    cli_main(["--out", str(tmp_path), "--n", "4", "--seed", "2", "--tasks", "ocr,scene", "--level", "0,1"])
    records = json.loads((tmp_path / "data.json").read_text())
    assert len(records) == 4 and {r["task"] for r in records} <= {"ocr", "scene"}
    assert "wrote 4 samples" in capsys.readouterr().out


def test_cli_writes_the_app_example_images(tmp_path):
    cli_main(["--examples", str(tmp_path)])
    for task in TASKS:
        assert sorted(p.name for p in (tmp_path / task).iterdir()) == [f"{task}-{i}.png" for i in (1, 2, 3)]
        assert Image.open(tmp_path / task / f"{task}-1.png").size == IMAGE_SIZES[task]


def test_shipped_examples_are_what_the_cli_writes(tmp_path):
    """assets/examples is what the command in docs/training.md writes: text anywhere on the grid, as the model is trained."""
    cli_main(["--examples", str(tmp_path)])
    shipped = Path(__file__).resolve().parents[2] / "assets" / "examples"
    for task in TASKS:
        for i in (1, 2, 3):
            name = f"{task}/{task}-{i}.png"
            assert Image.open(shipped / name).tobytes() == Image.open(tmp_path / name).tobytes(), name


def test_cli_spread_places_dataset_text(tmp_path):
    cli_main(["--out", str(tmp_path), "--n", "3", "--tasks", "ocr", "--spread", "0"])
    records = json.loads((tmp_path / "data.json").read_text())
    assert {_ink_origin(Image.open(tmp_path / r["image"])) for r in records} == {(1, 0)}


def _ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels that differ from the top-left pixel (the background)."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    ink = np.abs(pixels - pixels[0, 0]).sum(axis=2) > 60
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


@pytest.mark.parametrize("level", [0, 1, 2])
def test_ocr_jitter_moves_the_same_text_off_the_grid_by_at_most_the_jitter(level):
    shifts = set()
    for seed in range(30):
        on_grid = generate_sample("ocr", random.Random(seed), level)
        moved = generate_sample("ocr", random.Random(seed), level, ocr_jitter=5)
        assert moved.answer == on_grid.answer  # the same words, only drawn elsewhere
        (x0, y0, x1, y1), (mx0, my0, mx1, my1) = _ink_box(on_grid.image), _ink_box(moved.image)
        dx, dy = mx0 - x0, my0 - y0
        assert abs(dx) <= 5 and abs(dy) <= 5 and (mx1 - mx0, my1 - my0) == (x1 - x0, y1 - y0)  # whole, not clipped
        shifts.add((dx, dy))
    assert len(shifts) > 10  # many sub-patch offsets, not one
    assert generate_sample("ocr", random.Random(3), level, ocr_jitter=0).image.tobytes() == (
        generate_sample("ocr", random.Random(3), level).image.tobytes()
    )  # no jitter draws today's image
    with pytest.raises(ValueError, match="ocr_jitter"):
        generate_sample("ocr", random.Random(0), ocr_jitter=17)


def test_visitor_text_in_held_out_fonts_any_size_both_polarities_and_readable_targets():
    from model.synthetic.render import FONT_FILES, FONT_SPLITS, FREE_FONTS

    assert not set(FONT_SPLITS["train"]) & set(FONT_SPLITS["test"])  # evaluation fonts are never trained on
    assert {"mono", "mono-bold", "sans", "sans-bold", "serif", "serif-bold"} == set(FONT_SPLITS["train"])
    assert set(FREE_FONTS) == {"mono", "mono-bold", "sans", "sans-bold"}  # level 3 draws what it drew before
    assert all(name in FONT_FILES for names in FONT_SPLITS.values() for name in names)
    heights, polarities, left_phases = [], set(), set()
    for seed in range(60):
        sample = generate_sample("ocr", random.Random(seed), seed % 3, split="test", ocr_fonts="test")
        assert sample.image.size == IMAGE_SIZES["ocr"]
        assert score_sample("ocr", sample.answer, sample.target)["exact"] == 1.0
        assert all(is_held_out(w.lower()) for line in sample.target["lines"] for w in line.split())
        background, ink = _background_and_ink(np.asarray(sample.image))
        polarities.add(_luminance(background) > _luminance(ink))
        x0, y0, x1, y1 = _ink_box(sample.image)
        assert x1 <= sample.image.width and y1 <= sample.image.height
        left_phases.add(x0 % PATCH_SIZE)
        if len(sample.target["lines"]) == 1:
            heights.append(y1 - y0)
    assert polarities == {True, False}  # dark on light and light on dark
    assert len(left_phases) > 8  # text starts at any pixel, not on the grid
    assert min(heights) < 20 and max(heights) > 32  # small and large type
    with pytest.raises(ValueError, match="font split"):
        generate_sample("ocr", random.Random(0), ocr_fonts="other")
    assert generate_sample("ocr", random.Random(1), 1, ocr_fonts="train").image.tobytes() == (
        generate_sample("ocr", random.Random(1), 1, ocr_fonts="train").image.tobytes()
    )


needs_visitor_fonts = pytest.mark.skipif(
    not visitor_fonts_installed(), reason="visitor fonts not installed: run `make fonts`"
)


def test_wide_font_splits_keep_families_and_their_twins_apart():
    from model.synthetic.render import font_split, visitor_fonts

    faces = visitor_fonts()
    train, test = font_split("wide-train"), font_split("wide-test")
    train_families = {faces[name]["family"].split()[0] for name in train}
    test_families = {faces[name]["family"].split()[0] for name in test}
    assert len(train) >= 60 and len(train_families) >= 25  # many families, not many sizes of a few
    assert test_families == {"Liberation", "Carlito"} and not train_families & test_families
    # Arimo, Tinos and Cousine draw Liberation's glyphs under other names: in neither split
    assert not {"Arimo", "Tinos", "Cousine"} & (train_families | test_families)
    styles = {faces[name]["style"] for name in test}
    assert {"Regular", "Bold"} <= styles


@needs_visitor_fonts
def test_installed_visitor_fonts_are_the_ones_the_manifest_names():
    import hashlib

    from model.synthetic.render import VISITOR_FONT_DIR, visitor_fonts

    for face in visitor_fonts().values():
        assert hashlib.sha256((VISITOR_FONT_DIR / face["file"]).read_bytes()).hexdigest() == face["sha256"], face


@needs_visitor_fonts
def test_visitor_text_in_held_out_families_is_drawn_in_them_and_reads_back():
    from model.synthetic.render import font_split, load_font

    for seed in range(30):
        sample = generate_sample("ocr", random.Random(seed), seed % 3, split="test", ocr_fonts="wide-test")
        assert score_sample("ocr", sample.answer, sample.target)["exact"] == 1.0
        assert all(is_held_out(w.lower()) for line in sample.target["lines"] for w in line.split())
        x0, y0, x1, y1 = _ink_box(sample.image)
        assert 0 <= x0 < x1 <= sample.image.width and 0 <= y0 < y1 <= sample.image.height
    # The same draws in another split differ only in the face: the held-out split is really other fonts.
    held_out = generate_sample("ocr", random.Random(3), 0, ocr_fonts="wide-test").image.tobytes()
    assert held_out != generate_sample("ocr", random.Random(3), 0, ocr_fonts="wide-train").image.tobytes()
    for name in font_split("wide-test") + font_split("wide-train"):
        assert load_font(name, 24).getlength("abc") > 0


def test_visitor_spread_narrows_place_and_size_to_the_anchor():
    from model.synthetic.ocr import VISITOR_ANCHOR_SIZE

    corners, heights = set(), []
    for seed in range(24):
        anchored = generate_sample("ocr", random.Random(seed), 0, ocr_fonts="train", ocr_visitor_spread=0.0)
        x0, y0, _, y1 = _ink_box(anchored.image)
        corners.add((x0 <= 6, y0 <= 12))  # the block's box sits at the corner; ink starts within a glyph's bearing
        heights.append(y1 - y0)
    assert corners == {(True, True)}
    assert max(heights) - min(heights) < VISITOR_ANCHOR_SIZE // 2  # one size (words differ in ascenders and case)
    free = [_ink_box(generate_sample("ocr", random.Random(s), 0, ocr_fonts="train").image)[0] for s in range(24)]
    assert max(free) > 40  # at spread 1 (the default) text goes anywhere
    with pytest.raises(ValueError, match="ocr_visitor_spread"):
        generate_sample("ocr", random.Random(0), 0, ocr_fonts="train", ocr_visitor_spread=1.5)


def test_visitor_size_spread_opens_the_place_and_the_size_apart():
    """Place anywhere at the anchor's size, or every size at the anchor's corner: one opened without the other."""
    from model.synthetic.ocr import VISITOR_ANCHOR_SIZE

    def boxes(**options):
        return [
            _ink_box(generate_sample("ocr", random.Random(s), 0, ocr_fonts="train", **options).image)
            for s in range(24)
        ]

    placed = boxes(ocr_visitor_spread=1.0, ocr_visitor_size_spread=0.0)
    assert max(x0 for x0, _, _, _ in placed) > 40  # anywhere
    heights = [y1 - y0 for _, y0, _, y1 in placed]
    assert max(heights) - min(heights) < VISITOR_ANCHOR_SIZE // 2  # one size
    sized = boxes(ocr_visitor_spread=0.0, ocr_visitor_size_spread=1.0)
    assert all(x0 <= 6 and y0 <= 12 for x0, y0, _, _ in sized)  # at the corner
    heights = [y1 - y0 for _, y0, _, y1 in sized]
    assert max(heights) - min(heights) > VISITOR_ANCHOR_SIZE // 2  # many sizes
    with pytest.raises(ValueError, match="ocr_visitor_size_spread"):
        generate_sample("ocr", random.Random(0), 0, ocr_fonts="train", ocr_visitor_size_spread=-0.5)


def test_visitor_small_draws_the_smallest_sizes_anywhere():
    """The small option keeps visitor text to the bottom of its open size range, still at any place."""

    def boxes(**options):
        return [
            _ink_box(generate_sample("ocr", random.Random(s), 0, ocr_fonts="train", **options).image)
            for s in range(24)
        ]

    small, every = boxes(ocr_visitor_small=True), boxes()
    small_heights = sorted(y1 - y0 for _, y0, _, y1 in small)
    every_heights = sorted(y1 - y0 for _, y0, _, y1 in every)
    assert small_heights[-1] < every_heights[len(every_heights) // 2]  # the tallest small text is below the median
    assert max(x0 for x0, _, _, _ in small) > 40  # anywhere
    anchored = boxes(ocr_visitor_spread=0.0, ocr_visitor_small=True)
    assert {y1 - y0 for _, y0, _, y1 in anchored} == {y1 - y0 for _, y0, _, y1 in boxes(ocr_visitor_spread=0.0)}


def test_visitor_canvas_draws_visitor_text_on_canvases_of_other_shapes():
    """A visitor's image is seldom a 4:1 strip: the canvas option draws visitor text on landscape-to-square canvases
    of the same area, leaves grid text on its own strip, and yields to an explicit size."""
    from model.synthetic.config import IMAGE_AREA, IMAGE_SIZES, VISITOR_CANVASES

    shapes = {
        generate_sample("ocr", random.Random(s), s % 3, ocr_fonts="train", ocr_visitor_canvas=True).image.size
        for s in range(40)
    }
    assert len(shapes) >= 4 and shapes <= set(VISITOR_CANVASES)
    assert all(abs(w * h - IMAGE_AREA) <= IMAGE_AREA // 20 and w >= h for w, h in VISITOR_CANVASES)
    grid = generate_sample("ocr", random.Random(0), 0, ocr_visitor_canvas=True)  # not visitor text: the strip
    assert grid.image.size == IMAGE_SIZES["ocr"]
    sized = generate_sample("ocr", random.Random(0), 0, size=(256, 96), ocr_fonts="train", ocr_visitor_canvas=True)
    assert sized.image.size == (256, 96)
    assert generate_sample("ocr", random.Random(0), 0, ocr_fonts="train").image.size == IMAGE_SIZES["ocr"]


def test_a_missing_visitor_font_says_how_to_install_it(tmp_path, monkeypatch):
    from model.synthetic import render

    monkeypatch.setattr(render, "VISITOR_FONT_DIR", tmp_path)
    render.load_font.cache_clear()
    try:
        assert not render.visitor_fonts_installed()
        with pytest.raises(FileNotFoundError, match="make fonts"):
            generate_sample("ocr", random.Random(0), 0, ocr_fonts="wide-test")
    finally:
        render.load_font.cache_clear()


def test_ocr_options_leave_the_other_tasks_alone():
    for task in ("poster", "webpage", "scene"):
        plain = generate_sample(task, random.Random(5), 1)
        with_options = generate_sample(task, random.Random(5), 1, ocr_jitter=8, ocr_fonts="train")
        assert plain.image.tobytes() == with_options.image.tobytes()


def _contrast(image: np.ndarray, ink: np.ndarray) -> float:
    """Mean luminance difference between the text's pixels and the rest."""
    lum = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    return abs(float(lum[ink].mean()) - float(lum[~ink].mean()))


def test_texture_changes_only_the_background_keeps_text_readable_and_is_deterministic():
    from model.synthetic.render import TEXTURE_AMPLITUDE

    changed_backgrounds = set()
    for seed in range(40):
        level, fonts = seed % 3, ("train", "test")[seed % 2]
        plain = generate_sample("ocr", random.Random(seed), level, split="test", ocr_fonts=fonts)
        textured = generate_sample("ocr", random.Random(seed), level, split="test", ocr_fonts=fonts, texture=True)
        again = generate_sample("ocr", random.Random(seed), level, split="test", ocr_fonts=fonts, texture=True)
        assert textured.image.tobytes() == again.image.tobytes()  # deterministic from the sample's seed
        assert textured.answer == plain.answer and score_sample("ocr", textured.answer, textured.target)["exact"] == 1
        p, t = np.asarray(plain.image).astype(int), np.asarray(textured.image).astype(int)
        background = _background_and_ink(p)[0]
        ink = np.abs(p - background).sum(axis=2) > 60
        assert (t[~ink] != p[~ink]).any()  # the background is no longer plain
        assert np.abs(t[~ink] - p[~ink]).max() <= TEXTURE_AMPLITUDE + 1  # faint
        assert _contrast(t, ink) >= 0.85 * _contrast(p, ink) and _contrast(t, ink) > 60  # the text stays readable
        changed_backgrounds.add(round(float(np.abs(t[~ink] - p[~ink]).mean()), 1))
    assert len(changed_backgrounds) > 5  # several textures, not one
    for task in ("poster", "webpage", "scene"):  # under posters, pages and scenes too, answers unchanged
        for level in LEVELS:
            plain = generate_sample(task, random.Random(level), level, split="test")
            textured = generate_sample(task, random.Random(level), level, split="test", texture=True)
            assert textured.answer == plain.answer and textured.image.tobytes() != plain.image.tobytes()


def test_held_out_layouts_differ_from_every_training_layout_and_are_never_trained_on():
    from model.synthetic import poster, scene, webpage

    for module in (poster, webpage, scene):
        assert set(module.LAYOUTS) == {"train", "test"}
        assert not set(module.LAYOUTS["train"]) & set(module.LAYOUTS["test"])
        assert len(module.LAYOUTS["train"]) > 1  # more than one layout in training
    # Training posters put the date first too, so a line's field is learnt from what it says, not where it is.
    orders = set()
    for seed in range(30):
        _, _, boxes = poster.compose(
            random.Random(seed), seed % 3, IMAGE_SIZES["poster"], word_bank("train", 0.0), layout="train"
        )
        orders.add(boxes["date"][3] <= boxes["title"][1])
    assert orders == {True, False}
    words = word_bank("test", 0.0)
    for seed in range(60):
        level, rng = seed % 3, random.Random(seed)
        for split in ("train", "test"):
            _, _, boxes = poster.compose(random.Random(seed), level, IMAGE_SIZES["poster"], words, layout=split)
            title, date = boxes["title"], boxes["date"]
            assert title[3] <= date[1] or date[3] <= title[1]  # one above the other
            if split == "test":  # held out: the date above a left-aligned title, beside the band
                assert date[3] <= title[1] and title[0] == date[0] == PATCH_SIZE
            else:  # training: never that
                assert not (date[3] <= title[1] and title[0] == date[0] == PATCH_SIZE)
            _, _, boxes = webpage.compose(random.Random(seed), level, IMAGE_SIZES["webpage"], words, layout=split)
            links_below = boxes["links"][1] > boxes["button"][1]
            assert links_below == (split == "test")  # held out: the nav at the bottom, under the button
            if split == "test":
                assert boxes["button"][0] == PATCH_SIZE  # and the button on the left
            _, target, objects = scene.compose(random.Random(seed), rng.choice(list(LEVELS)), (192, 192), layout=split)
            for (x, y, extent), drawn in zip(objects, target["objects"]):
                assert (extent < 35) == (split == "test")  # held out: smaller than every trained shape
                # wholly inside the third of the canvas its position names, so the answer is decidable from the image
                column, row = divmod(load_vocab()["scene"]["positions"].index(drawn["position"]), 3)[::-1]
                assert column * 64 <= x - extent / 2 and x + extent / 2 <= (column + 1) * 64
                assert row * 64 <= y - extent / 2 and y + extent / 2 <= (row + 1) * 64
    with pytest.raises(ValueError, match="layout split"):
        generate_sample("poster", random.Random(0), layout="other")


@pytest.mark.parametrize("task", ["poster", "webpage", "scene"])
def test_scorer_reads_answers_of_the_new_layouts(task):
    for seed in range(12):
        for layout in ("train", "test"):
            sample = generate_sample(task, random.Random(seed), seed % 4, split="test", layout=layout, texture=True)
            assert sample.image.size == IMAGE_SIZES[task]
            assert score_sample(task, sample.answer, sample.target)[MAIN_METRIC[task]] == 1.0


def test_new_options_at_their_defaults_draw_todays_images():
    for task, level in TASK_LEVELS:
        today = generate_sample(task, random.Random(11), level)
        with_defaults = generate_sample(task, random.Random(11), level, texture=False, layout=None)
        assert today.image.tobytes() == with_defaults.image.tobytes() and today.answer == with_defaults.answer
    assert generate_sample("ocr", random.Random(2), 1, layout="test").image.tobytes() == (
        generate_sample("ocr", random.Random(2), 1).image.tobytes()
    )  # OCR has no layouts
