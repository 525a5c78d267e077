"""OCR task: words on a plain strip, to be read back verbatim.

Levels 0-2 draw monospace glyphs one per 16 px patch column, 32 px tall (two patch rows, the line centred on a
patch-row boundary), on the patch grid anywhere: the layout that taught a small model to read text anywhere within
minutes in the platform's probes (glyphs in 16 x 16 cells, about 9 x 11 px, were still unread after 50k mixed
samples). 0 one lowercase word in black on white; 1 two words on one line, any case and a dark colour on a light
tint; 2 two lines of one or two words, a blank patch row apart. Level 3 widens the reader: one or two lines in any
DejaVu font (proportional included) at a smaller or larger size, at any offset off the grid.
"""

import random

from PIL import Image, ImageDraw

from .config import PATCH_SIZE
from .render import (
    FREE_FONTS,
    as_color,
    draw_free_text,
    draw_grid_text,
    fit_free_font,
    free_line_height,
    grid_font,
    spread_randint,
)
from .vocab import WordBank, load_vocab

MIN_SIZE = (8 * PATCH_SIZE, 5 * PATCH_SIZE)  # two 32 px lines of one short word, a blank row apart


def apply_case(words: list[str], rng: random.Random) -> list[str]:
    """Lowercase most of the time, sometimes Title Case or UPPER CASE, so every letter form gets read."""
    style = rng.choices(("lower", "title", "upper"), weights=(3, 1, 1))[0]
    if style == "title":
        return [w.capitalize() for w in words]
    return [w.upper() for w in words] if style == "upper" else words


def pick_lines(rng: random.Random, level: int, words: WordBank, max_chars: int) -> list[str]:
    """The text to draw, as lines of space-separated words that fit `max_chars` columns."""
    if level == 0:
        return [words.pick(rng, max_chars)]
    n_lines = 1 if level == 1 else rng.randint(1, 2) if level == 3 else 2
    lines = []
    for _ in range(n_lines):
        n_words = 2 if level == 1 else rng.randint(1, 2)
        if n_words * (words.min_len + 1) - 1 > max_chars:
            n_words = 1
        lines.append(" ".join(apply_case(words.pick_phrase(rng, n_words, max_chars), rng)))
    return lines


def draw_on_grid(
    draw: ImageDraw.ImageDraw, rng: random.Random, lines: list[str], size: tuple[int, int], fill, spread: float = 1.0
) -> None:
    """Each character in one patch column (16 x 32 cells: a glyph spans two patch rows, centred on the boundary
    between them), lines a blank patch row apart, placed on the patch grid (anywhere, or with `spread` < 1 near the
    top-left corner)."""
    grid = grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    cols, rows = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
    top = spread_randint(rng, 0, max(0, rows - 3 * len(lines) + 1), spread)
    longest = max(len(line) for line in lines)
    margin = 1 if cols - longest >= 2 else 0
    left = spread_randint(rng, margin, cols - longest - margin, spread)  # lines share a left edge, like a text block
    for i, line in enumerate(lines):
        draw_grid_text(draw, line, left, top + 3 * i, grid, fill)


def draw_free(
    draw: ImageDraw.ImageDraw, rng: random.Random, lines: list[str], size: tuple[int, int], fill, fonts=FREE_FONTS
) -> None:
    """All lines in one random font of `fonts` (DejaVu) and size, as a block at a random (off-grid) position."""
    name = rng.choice(fonts)
    line_height_max = size[1] // len(lines)
    font_size = rng.randint(14, max(14, min(30, int(line_height_max / 1.3))))
    font = fit_free_font(max(lines, key=len), name, font_size, size[0] - 8)
    pitch = round(font.size * 1.25)
    block_w = round(max(font.getlength(line) for line in lines))
    block_h = pitch * (len(lines) - 1) + free_line_height(font)[1]
    x = rng.randint(2, max(2, size[0] - block_w - 4))
    y = rng.randint(2, max(2, size[1] - block_h - 4))
    for i, line in enumerate(lines):
        draw_free_text(draw, line, (x, y + i * pitch), font, fill)


def generate(
    rng: random.Random, level: int, size: tuple[int, int], words: WordBank, spread: float = 1.0
) -> tuple[Image.Image, dict]:
    """Render one OCR sample; the target holds the text (lines joined by newlines) and the lines.

    `spread` limits how far grid text (levels 0-2) is moved from the top-left corner (see `spread_randint`).
    """
    vocab = load_vocab()["ocr"]
    if level == 0:
        background, fill = (255, 255, 255), (17, 17, 17)
    else:
        background, fill = as_color(rng.choice(vocab["backgrounds"])), as_color(rng.choice(vocab["text_colors"]))
    max_chars = min(size[0] // PATCH_SIZE - 2, 24)
    lines = pick_lines(rng, level, words, max_chars)
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    if level < 3:
        draw_on_grid(draw, rng, lines, size, fill, spread)
    else:
        draw_free(draw, rng, lines, size, fill)
    return image, {"text": "\n".join(lines), "lines": lines}


VARIANTS = ("pixel-offset", "proportional")


def generate_variant(
    rng: random.Random, level: int, size: tuple[int, int], words: WordBank, variant: str
) -> tuple[Image.Image, dict]:
    """A level 0-2 OCR sample drawn off the patch grid, to measure how far reading carries beyond its training data.

    "pixel-offset": the grid rendering shifted right by 1-15 pixels and down by 0-15, so glyphs straddle patch
    columns; "proportional": the same text in DejaVu Sans (regular or bold), any size that fits, at any pixel.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown OCR variant {variant!r}; expected one of {VARIANTS}")
    if variant == "pixel-offset":
        image, target = generate(rng, level, size, words)
        background = image.getpixel((0, 0))
        dx, dy = rng.randint(1, PATCH_SIZE - 1), rng.randint(0, PATCH_SIZE - 1)
        shifted = Image.new("RGB", size, background)
        shifted.paste(image.crop((0, 0, size[0] - dx, size[1] - dy)), (dx, dy))
        return shifted, target
    vocab = load_vocab()["ocr"]
    if level == 0:
        background, fill = (255, 255, 255), (17, 17, 17)
    else:
        background, fill = as_color(rng.choice(vocab["backgrounds"])), as_color(rng.choice(vocab["text_colors"]))
    lines = pick_lines(rng, level, words, min(size[0] // PATCH_SIZE - 2, 24))
    image = Image.new("RGB", size, background)
    draw_free(ImageDraw.Draw(image), rng, lines, size, fill, fonts=("sans", "sans-bold"))
    return image, {"text": "\n".join(lines), "lines": lines}
