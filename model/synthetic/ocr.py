"""OCR task: words on a plain strip, to be read back verbatim.

Levels 0-2 draw monospace glyphs one per 16 px patch column, 32 px tall (two patch rows, the line centred on a
patch-row boundary), on the patch grid anywhere: the layout that taught a small model to read text anywhere within
minutes in the platform's probes (glyphs in 16 x 16 cells, about 9 x 11 px, were still unread after 50k mixed
samples). 0 one lowercase word in black on white; 1 two words on one line, any case and a dark colour on a light
tint; 2 two lines of one or two words, a blank patch row apart. Level 3 widens the reader: one or two lines in any
DejaVu font (proportional included) at a smaller or larger size, at any offset off the grid.

Two options draw what visitors draw, off by default so that every level keeps producing the same images:
`jitter` moves grid text (levels 0-2) by up to that many pixels each way, off the patch grid (a 1-pixel shift stopped
the grid-trained model reading; ramping the jitter up from the start of a run is the recipe tried against that), and
`fonts` (a split of `render.font_split`: "train"/"test" in DejaVu faces, "wide-train"/"wide-test" in the many free
families of `make fonts`) draws the level's text "visitor style" instead: one font of that split at 16-48 px, at any
pixel, dark on light or light on dark.
"""

import random
from collections.abc import Sequence

from PIL import Image, ImageDraw

from .config import PATCH_SIZE
from .render import (
    FREE_FONTS,
    apply_texture,
    as_color,
    draw_block,
    draw_grid_text,
    fit_free_font,
    font_split,
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
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    lines: list[str],
    size: tuple[int, int],
    fill,
    spread: float = 1.0,
    jitter: int = 0,
) -> None:
    """Each character in one patch column (16 x 32 cells: a glyph spans two patch rows, centred on the boundary
    between them), lines a blank patch row apart, placed on the patch grid (anywhere, or with `spread` < 1 near the
    top-left corner), then, with `jitter` > 0, moved by up to `jitter` pixels each way (kept inside the image)."""
    grid = grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    cols, rows = size[0] // PATCH_SIZE, size[1] // PATCH_SIZE
    top = spread_randint(rng, 0, max(0, rows - 3 * len(lines) + 1), spread)
    longest = max(len(line) for line in lines)
    margin = 1 if cols - longest >= 2 else 0
    left = spread_randint(rng, margin, cols - longest - margin, spread)  # lines share a left edge, like a text block
    shift = (0, 0)
    if jitter:  # no extra draws without jitter: the grid levels keep their exact images
        block_w, block_h = longest * PATCH_SIZE, (3 * len(lines) - 1) * PATCH_SIZE
        dx = min(max(rng.randint(-jitter, jitter), -left * PATCH_SIZE), size[0] - block_w - left * PATCH_SIZE)
        dy = min(max(rng.randint(-jitter, jitter), -top * PATCH_SIZE), size[1] - block_h - top * PATCH_SIZE)
        shift = (dx, dy)
    for i, line in enumerate(lines):
        draw_grid_text(draw, line, left, top + 3 * i, grid, fill, shift)


def draw_free(
    draw: ImageDraw.ImageDraw, rng: random.Random, lines: list[str], size: tuple[int, int], fill, fonts=FREE_FONTS
) -> None:
    """All lines in one random font of `fonts` (DejaVu) and size, as a block at a random (off-grid) position."""
    name = rng.choice(fonts)
    line_height_max = size[1] // len(lines)
    font_size = rng.randint(14, max(14, min(30, int(line_height_max / 1.3))))
    font = fit_free_font(max(lines, key=len), name, font_size, size[0] - 8)
    draw_block(draw, rng, lines, font, round(font.size * 1.25), size, fill, margins=(2, 4))


VISITOR_SIZES = (16, 48)  # pixel sizes of visitor-style text (smaller when the text would not fit)
VISITOR_ANCHOR_SIZE = 32  # its size at spread 0, the anchor a curriculum opens from (`generate`'s `visitor_spread`)


def draw_visitor(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    lines: list[str],
    size: tuple[int, int],
    fill,
    fonts: Sequence[str],
    spread: float = 1.0,
    size_spread: float | None = None,
    small: bool = False,
) -> None:
    """All lines in one font of `fonts`, at 16-48 px (shrunk to fit), as a block at any pixel: text typed into a
    paint program, which is what a visitor uploads. `spread` below 1 narrows the place and `size_spread` (`spread`
    when None) the size towards an anchor: at 0 and 0 the text is `VISITOR_ANCHOR_SIZE` px at the top-left corner,
    only the font and words varying. Apart, they let a curriculum open one before the other. `small` draws from the
    smallest quarter of the open size range (16-24 px when fully open), the sizes a small model reads worst."""
    name = rng.choice(list(fonts))
    pitch_of = 1.2  # line pitch in font sizes
    tallest = int((size[1] - 4) / (pitch_of * (len(lines) - 1) + 1.2))  # the block's height must fit the canvas
    size_spread = spread if size_spread is None else size_spread
    smallest, largest = (
        round(VISITOR_ANCHOR_SIZE + (end - VISITOR_ANCHOR_SIZE) * size_spread) for end in VISITOR_SIZES
    )
    if small:
        largest = smallest + (largest - smallest) // 4
    font_size = rng.randint(smallest, max(smallest, min(largest, tallest)))
    font = fit_free_font(max(lines, key=len), name, font_size, size[0] - 4)
    draw_block(draw, rng, lines, font, round(font.size * pitch_of), size, fill, margins=(0, 1), spread=spread)


def generate(
    rng: random.Random,
    level: int,
    size: tuple[int, int],
    words: WordBank,
    spread: float = 1.0,
    *,
    jitter: int = 0,
    fonts: str | None = None,
    texture: bool = False,
    visitor_spread: float = 1.0,
    visitor_size_spread: float | None = None,
    visitor_small: bool = False,
) -> tuple[Image.Image, dict]:
    """Render one OCR sample; the target holds the text (lines joined by newlines) and the lines.

    `spread` limits how far grid text (levels 0-2) is moved from the top-left corner (see `spread_randint`); `jitter`
    then moves it off the grid by up to that many pixels each way; `fonts` ("train" or "test") draws the text visitor
    style in that split's fonts instead (see the module docstring); `texture` draws a faint texture under the text
    (`render.apply_texture`); `visitor_spread` narrows visitor-style text's place and, unless `visitor_size_spread`
    is given, its size, and `visitor_small` keeps it to the smallest sizes (see `draw_visitor`).
    """
    if fonts is not None:
        return generate_visitor(
            rng, level, size, words, fonts, texture, visitor_spread, visitor_size_spread, visitor_small
        )
    vocab = load_vocab()["ocr"]
    if level == 0:
        background, fill = (255, 255, 255), (17, 17, 17)
    else:
        background, fill = as_color(rng.choice(vocab["backgrounds"])), as_color(rng.choice(vocab["text_colors"]))
    max_chars = min(size[0] // PATCH_SIZE - 2, 24)
    lines = pick_lines(rng, level, words, max_chars)
    image = Image.new("RGB", size, background)
    if texture:
        apply_texture(image, rng)
    draw = ImageDraw.Draw(image)
    if level < 3:
        draw_on_grid(draw, rng, lines, size, fill, spread, jitter)
    else:
        draw_free(draw, rng, lines, size, fill)
    return image, {"text": "\n".join(lines), "lines": lines}


def generate_visitor(
    rng: random.Random,
    level: int,
    size: tuple[int, int],
    words: WordBank,
    fonts: str,
    texture: bool = False,
    spread: float = 1.0,
    size_spread: float | None = None,
    small: bool = False,
) -> tuple[Image.Image, dict]:
    """The level's text (as `pick_lines` draws it) in one font of split `fonts`, 16-48 px, at any pixel; half the
    time dark on a light tint, half the time light on a dark colour; with `texture`, over a faint texture."""
    vocab = load_vocab()["ocr"]
    light, dark = as_color(rng.choice(vocab["backgrounds"])), as_color(rng.choice(vocab["text_colors"]))
    background, fill = (light, dark) if rng.random() < 0.5 else (dark, light)
    lines = pick_lines(rng, level, words, min(size[0] // PATCH_SIZE - 2, 24))
    image = Image.new("RGB", size, background)
    if texture:
        apply_texture(image, rng)
    draw_visitor(ImageDraw.Draw(image), rng, lines, size, fill, font_split(fonts), spread, size_spread, small)
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
