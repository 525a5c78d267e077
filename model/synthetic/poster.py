"""Poster task: a coloured poster with a big title and a date line, read back as "Title: ... Date: ...".

Levels 0-2 keep all text monospaced on the patch grid, one character per 16 px patch column, title and date 32 px
tall (two patch rows, as OCR): 0 a one-word bold title and a "MAR 02" date below it,
centred; 1 one- or two-word titles (on one or two lines), every date format, centred or left-aligned on any column; 2 adds distractors the
answer must ignore (a frame, a rule and an unscored venue line) and a bold date. Level 3 sets the same content in any
DejaVu font and size, off the grid. Levels 0-2 print dark text on a light background, as every grid task does; level
3 also uses light-on-dark palettes. Options, off by default: a faint background texture, and the grid layouts of
`LAYOUTS` (the date above the title held out for evaluation).
"""

import random
from typing import Any

from PIL import Image, ImageDraw

from . import render
from .config import PATCH_SIZE
from .vocab import WordBank, load_vocab, vocab_bank

MIN_SIZE = (8 * PATCH_SIZE, 8 * PATCH_SIZE)
# Grid layouts (levels 0-2) by split, like the word list and the fonts: training draws the title above the date,
# centred, left- or right-aligned, near the top or the bottom, or the date first as a dateline at the top right over a
# centred title; evaluation alone draws the date above a left-aligned title beside a band down the left edge. Without
# a training layout that puts the date first, the field of a line follows from its place, never from what it says:
# the shipped model read both lines of the held-out layout and named the first one the title every time.
LAYOUTS: dict[str, tuple[str, ...]] = {"train": ("stacked", "low-right", "dateline"), "test": ("date-first",)}
Box = tuple[int, int, int, int]


def pick_title(rng: random.Random, level: int, words: WordBank, max_chars: int) -> list[str]:
    """Title lines in upper case: event words from `vocab.json` half the time, general English words otherwise."""
    n_words = 1 if level == 0 else rng.randint(1, 2)
    event_words = vocab_bank("poster", "title_words")
    picked = [(event_words if rng.random() < 0.5 else words).pick(rng, max_chars).upper() for _ in range(n_words)]
    if n_words == 2 and len(" ".join(picked)) <= max_chars and rng.random() < 0.5:
        return [" ".join(picked)]
    return picked


def pick_date(rng: random.Random, level: int, max_chars: int) -> str:
    """A date such as "MAR 02" (level 0) or any format of `vocab.json` that fits the line; the day is zero-padded, so
    each format has one length."""
    vocab = load_vocab()["poster"]
    formats = vocab["date_formats"][:1] if level == 0 else vocab["date_formats"]
    fitting = [f for f in formats if len(f.format(month="MAR", day=12, year=2025)) <= max_chars] or formats[:1]
    return rng.choice(fitting).format(
        month=rng.choice(vocab["months"]), day=f"{rng.randint(1, 28):02d}", year=rng.choice(vocab["years"])
    )


def draw_on_grid(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    level: int,
    title: list[str],
    date: str,
    size: tuple[int, int],
    fill,
    spread: float = 1.0,
) -> dict[str, Box]:
    """Title, optional venue and date as blocks of whole patch rows, one free row between blocks; `spread` < 1 keeps
    the blocks near the top. Returns the boxes of the title (all its lines) and the date."""
    cols, rows = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
    title_grid = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    date_grid = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono" if level < 2 else "mono-bold")
    small_grid = render.grid_font(PATCH_SIZE, PATCH_SIZE, "mono")
    blocks = [(line, title_grid) for line in title]
    if level == 2 and rows >= 2 * len(title) + 6:
        blocks.append(("at " + vocab_bank("poster", "title_words").pick(rng, cols - 5), small_grid))
    blocks.append((date, date_grid))
    heights = [grid.cell_h // PATCH_SIZE for _, grid in blocks]
    gaps = [0] * (len(title) - 1) + [1] * (len(blocks) - len(title))  # title lines stacked, then a free row each
    slack = max(0, rows - 2 - sum(heights) - sum(gaps))
    row = 1 + render.spread_randint(rng, 0, slack // 2, spread)
    gaps[len(title) - 1] += render.spread_randint(
        rng, 0, slack - (row - 1), spread
    )  # spread the rest between title and date
    centred = level == 0 or rng.random() < 0.5
    widest = max(len(text) for text, _ in blocks)
    left = render.spread_randint(
        rng, 1, max(1, cols - 1 - widest), spread
    )  # a left-aligned block starts on any column
    drawn = []
    for i, (text, grid) in enumerate(blocks):
        col = (cols - len(text)) // 2 if centred else left
        drawn.append(render.draw_grid_text(draw, text, col, row, grid, fill))
        end = row + heights[i]
        if level == 2 and i == len(title) - 1:  # a rule in the free row under the title
            y = end * PATCH_SIZE + PATCH_SIZE // 2
            draw.line([(PATCH_SIZE, y), (size[0] - PATCH_SIZE, y)], fill, 2)
        row = end + (gaps[i] if i < len(gaps) else 0)
    if level == 2:
        draw.rectangle([4, 4, size[0] - 5, size[1] - 5], outline=fill, width=2)
    return {"title": union(drawn[: len(title)]), "date": drawn[-1]}


def union(boxes: list[Box]) -> Box:
    """The smallest box holding all `boxes`."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def draw_layout(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    level: int,
    title: list[str],
    date: str,
    size: tuple[int, int],
    fill,
    layout: str,
    spread: float = 1.0,
) -> dict[str, Box]:
    """Title and date on the patch grid in one of the other `LAYOUTS` (for "stacked", `draw_on_grid`), level 2 with
    its frame. "low-right": title then date, right-aligned, pushed towards the bottom; "dateline": the date
    right-aligned at the top, the title centred below it; "date-first" (held out for evaluation): the date above the
    title, left-aligned beside a band down the left edge.

    Returns:
        The boxes of the title (all its lines) and the date.
    """
    if layout == "stacked":
        return draw_on_grid(draw, rng, level, title, date, size, fill, spread)
    cols, rows = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
    title_grid = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    date_grid = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono" if level < 2 else "mono-bold")
    used = 2 * len(title) + 2  # title lines and the date line, in patch rows
    slack = max(0, rows - 2 - used - 1)
    gap = 1 + render.spread_randint(rng, 0, slack // 2, spread)
    # rows from the top (dateline, date-first) or from the bottom (low-right)
    shift = render.spread_randint(rng, 0, slack - (gap - 1), spread)
    if layout == "low-right":
        row = max(0, rows - 1 - used - gap - shift)
        title_boxes = [
            render.draw_grid_text(draw, line, max(0, cols - 1 - len(line)), row + 2 * i, title_grid, fill)
            for i, line in enumerate(title)
        ]
        date_box = render.draw_grid_text(
            draw, date, max(0, cols - 1 - len(date)), row + 2 * len(title) + gap, date_grid, fill
        )
    elif layout == "dateline":
        row = min(1 + shift, max(0, rows - used - gap))
        date_box = render.draw_grid_text(draw, date, max(0, cols - 1 - len(date)), row, date_grid, fill)
        title_boxes = [
            render.draw_grid_text(draw, line, max(0, (cols - len(line)) // 2), row + 2 + gap + 2 * i, title_grid, fill)
            for i, line in enumerate(title)
        ]
    elif layout == "date-first":
        draw.rectangle([0, 0, PATCH_SIZE // 2 - 1, size[1] - 1], fill=fill)  # the side band (not part of the answer)
        row = min(1 + shift, max(0, rows - used - gap))
        date_box = render.draw_grid_text(draw, date, 1, row, date_grid, fill)
        title_boxes = [
            render.draw_grid_text(draw, line, 1, row + 2 + gap + 2 * i, title_grid, fill)
            for i, line in enumerate(title)
        ]
    else:
        raise ValueError(f"unknown poster layout {layout!r}; expected one of {LAYOUTS}")
    if level == 2:
        draw.rectangle([4, 4, size[0] - 5, size[1] - 5], outline=fill, width=2)
    return {"title": union(title_boxes), "date": date_box}


def draw_free(draw: ImageDraw.ImageDraw, rng: random.Random, title: list[str], date: str, size: tuple[int, int], fill):
    """Title and date in random DejaVu fonts and sizes, stacked at a random offset, left-aligned or centred."""
    width, height = size
    title_font = render.fit_free_font(
        max(title, key=len), rng.choice(render.FREE_FONTS), rng.randint(20, 34), width - 16
    )
    date_font = render.fit_free_font(date, rng.choice(render.FREE_FONTS), rng.randint(13, 20), width - 16)
    lines = [(line, title_font) for line in title] + [(date, date_font)]
    pitches = [round(render.free_line_height(font)[1] * 1.15) for _, font in lines]
    pitches[-2] += rng.randint(4, 24)  # space between the title and the date
    block_h = sum(pitches[:-1]) + render.free_line_height(date_font)[1]
    y = rng.randint(6, max(6, height - block_h - 6))
    centred = rng.random() < 0.5
    x_left = rng.randint(6, 20)
    for (text, font), pitch in zip(lines, pitches):
        text_w = round(font.getlength(text))
        x = (width - text_w) // 2 if centred else min(x_left, width - text_w - 4)
        render.draw_free_text(draw, text, (x, y), font, fill)
        y += pitch


def generate(
    rng: random.Random, level: int, size: tuple[int, int], words: WordBank, spread: float = 1.0, **options: Any
) -> tuple[Image.Image, dict]:
    """Render one poster; the target holds the title (lines joined by spaces) and the date as printed.

    `spread` limits how far grid text (levels 0-2) is moved from its first free row (see `render.spread_randint`);
    `texture` draws a faint texture under it (`render.apply_texture`); `layout` ("train" or "test") draws levels 0-2
    in one of that split's `LAYOUTS` instead of the level's own (level 3 keeps its free drawing).
    """
    image, target, _ = compose(rng, level, size, words, spread, **options)
    return image, target


def compose(
    rng: random.Random,
    level: int,
    size: tuple[int, int],
    words: WordBank,
    spread: float = 1.0,
    *,
    texture: bool = False,
    layout: str | None = None,
) -> tuple[Image.Image, dict, dict[str, Box]]:
    """`generate`, also returning where the title and date were drawn (empty at level 3): the layouts' checks."""
    render.check_layout_split(layout, LAYOUTS)
    vocab = load_vocab()["poster"]
    # Grid levels print dark on light, like OCR and webpages: the small default model learns one set of glyphs, and
    # light-on-dark titles were never read (0.02) when they made up most posters. Level 3 adds the inverse palettes.
    palettes = vocab["palettes"] + (vocab["inverse_palettes"] if level == 3 else [])
    palette = rng.choice(palettes)
    background, fill = render.as_color(palette["background"]), render.as_color(palette["text"])
    max_chars = size[0] // PATCH_SIZE - 2
    title = pick_title(rng, level, words, max_chars)
    date = pick_date(rng, level, max_chars)
    image = Image.new("RGB", size, background)
    if texture:
        render.apply_texture(image, rng)
    draw = ImageDraw.Draw(image)
    boxes: dict[str, Box] = {}
    if level < 3 and layout is not None:
        boxes = draw_layout(draw, rng, level, title, date, size, fill, rng.choice(LAYOUTS[layout]), spread)
    elif level < 3:
        boxes = draw_on_grid(draw, rng, level, title, date, size, fill, spread)
    else:
        draw_free(draw, rng, title, date, size, fill)
    return image, {"title": " ".join(title), "date": date}, boxes
