"""Drawing helpers shared by the task renderers: cached fonts, text laid on the patch grid, free text, colours.

Why a grid: the model sees 16 px patches, and a small model learns to read only when every character sits in its
own patch column (see the project's training notes). `draw_grid_text` therefore draws character by character, each
centred in a cell that starts on a multiple of the patch size, instead of trusting the font's advance width.
Higher curriculum levels use `draw_free_text` (any font, any offset) once the grid reader works.
"""

import hashlib
import json
import math
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..shared import PROJECT_ROOT
from .config import PATCH_SIZE

FONT_DIR = PROJECT_ROOT / "assets" / "fonts"
FONT_FILES = {
    "mono": "DejaVuSansMono.ttf",
    "mono-bold": "DejaVuSansMono-Bold.ttf",
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
    "serif": "DejaVuSerif.ttf",
    "serif-bold": "DejaVuSerif-Bold.ttf",
    "sans-condensed": "DejaVuSansCondensed.ttf",
    "serif-condensed-bold": "DejaVuSerifCondensed-Bold.ttf",
}
FREE_FONTS = ("mono", "mono-bold", "sans", "sans-bold")  # fonts used off the grid at the hardest level
# Fonts of visitor-style text (`model.synthetic.ocr.draw_visitor`), split like the word list: "train" draws the six
# regular and bold DejaVu sans, serif and monospace faces, "test" two DejaVu faces no training sample uses. The "wide"
# splits draw the many free families of `assets/fonts/visitor.json` instead (installed by `make fonts`): 70 faces of
# 30 families in training, Liberation Sans, Serif and Mono and Carlito held out.
FONT_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("mono", "mono-bold", "sans", "sans-bold", "serif", "serif-bold"),
    "test": ("sans-condensed", "serif-condensed-bold"),
}
WIDE_FONT_SPLITS = ("wide-train", "wide-test")
VISITOR_FONT_DIR = FONT_DIR / "visitor"


@lru_cache(maxsize=1)
def visitor_fonts() -> dict[str, dict]:
    """The faces of `assets/fonts/visitor.json` by name (file, family, split, Debian package, sha256)."""
    return {face["name"]: face for face in json.loads((FONT_DIR / "visitor.json").read_text())["fonts"]}


def font_split(split: str) -> tuple[str, ...]:
    """The font names of `split`: one of `FONT_SPLITS` (DejaVu) or of `WIDE_FONT_SPLITS` (the visitor fonts)."""
    if split in FONT_SPLITS:
        return FONT_SPLITS[split]
    if split in WIDE_FONT_SPLITS:
        wanted = split.removeprefix("wide-")
        return tuple(name for name, face in visitor_fonts().items() if face["split"] == wanted)
    raise ValueError(f"unknown font split {split!r}; expected one of {(*FONT_SPLITS, *WIDE_FONT_SPLITS)}")


def visitor_fonts_installed() -> bool:
    """Whether `make fonts` has put every visitor font in `assets/fonts/visitor`."""
    return all((VISITOR_FONT_DIR / face["file"]).is_file() for face in visitor_fonts().values())


Color = tuple[int, int, int]


@lru_cache(maxsize=1024)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A font of the project's own files, never the machine's, so images match on every machine: a DejaVu face of
    `assets/fonts` or a visitor font of `assets/fonts/visitor` (`visitor_fonts`)."""
    if name in FONT_FILES:
        return ImageFont.truetype(str(FONT_DIR / FONT_FILES[name]), size)
    if name in visitor_fonts():
        path = VISITOR_FONT_DIR / visitor_fonts()[name]["file"]
        if not path.is_file():
            raise FileNotFoundError(f"visitor font {name!r} is not installed: run `make fonts`")
        return ImageFont.truetype(str(path), size)
    raise ValueError(f"unknown font {name!r}; expected one of {sorted(FONT_FILES)} or a visitor font")


@dataclass(frozen=True)
class GridFont:
    """A font sized to fill a `cell_w` x `cell_h` cell, and where its baseline sits inside the cell."""

    font: ImageFont.FreeTypeFont
    cell_w: int
    cell_h: int
    baseline: int  # pixels from the top of the cell to the baseline


@lru_cache(maxsize=32)
def grid_font(cell_w: int = PATCH_SIZE, cell_h: int = 2 * PATCH_SIZE, name: str = "mono-bold") -> GridFont:
    """The largest size of `name` whose glyphs (ascenders to descenders) fit one cell with a pixel to spare.

    For 16 x 32 cells this gives DejaVu Sans Mono at 24 px (glyphs about 15 x 23 px); for 16 x 16 cells 15 px.
    """
    best = None
    for size in range(6, 2 * cell_h):
        font = load_font(name, size)
        _, top, _, bottom = font.getbbox("Wdlgjpqy", anchor="ls")
        width = max(font.getbbox(ch, anchor="ms")[2] - font.getbbox(ch, anchor="ms")[0] for ch in "MWmw@")
        if bottom - top > cell_h - 2 or width > cell_w - 1:
            break
        best = GridFont(font, cell_w, cell_h, baseline=int((cell_h - (bottom - top)) // 2 - top))
    if best is None:
        raise ValueError(f"no font size fits a {cell_w}x{cell_h} cell")
    return best


@lru_cache(maxsize=8192)
def glyph_mask(grid: GridFont, char: str) -> Image.Image:
    """One character rendered once into a cell-sized alpha mask; pasting masks is ~10x faster than `draw.text`."""
    mask = Image.new("L", (grid.cell_w, grid.cell_h), 0)
    ImageDraw.Draw(mask).text((grid.cell_w // 2, grid.baseline), char, font=grid.font, fill=255, anchor="ms")
    return mask


def draw_grid_text(
    draw: ImageDraw.ImageDraw,
    text: str,
    col: int,
    row: int,
    grid: GridFont,
    fill: Color,
    shift: tuple[int, int] = (0, 0),
) -> tuple[int, int, int, int]:
    """Draw `text` one character per cell, starting at patch column `col` and patch row `row`, moved by `shift`
    pixels (0, 0 keeps every cell on the patch grid).

    Returns:
        The box (x0, y0, x1, y1) of the cells used, for layout checks and decorations.
    """
    x0, y0 = col * PATCH_SIZE + shift[0], row * PATCH_SIZE + shift[1]
    for i, char in enumerate(text):
        if char != " ":
            draw.bitmap((x0 + i * grid.cell_w, y0), glyph_mask(grid, char), fill=fill)
    return x0, y0, x0 + len(text) * grid.cell_w, y0 + grid.cell_h


@lru_cache(maxsize=512)
def free_line_height(font: ImageFont.FreeTypeFont) -> tuple[int, int]:
    """(ascent, height) of a line of `font`: top of the tallest letters to the baseline, and to the descenders."""
    _, top, _, bottom = font.getbbox("Wdlgjpqy", anchor="ls")
    return int(-top), int(bottom - top)


def fit_free_font(text: str, name: str, size: int, max_width: int, min_size: int = 10) -> ImageFont.FreeTypeFont:
    """`name` at `size`, shrunk until `text` is at most `max_width` pixels wide."""
    while size > min_size and load_font(name, size).getlength(text) > max_width:
        size -= 1
    return load_font(name, size)


def draw_free_text(
    draw: ImageDraw.ImageDraw, text: str, xy: tuple[int, int], font: ImageFont.FreeTypeFont, fill: Color
) -> tuple[int, int, int, int]:
    """Draw one line of `text` whose line box (tallest letter to lowest descender) starts at `xy`.

    Lines are placed by their baseline, not their ink, so that words without ascenders do not float up.

    Returns:
        The line box (x0, y0, x1, y1).
    """
    ascent, height = free_line_height(font)
    draw.text((xy[0], xy[1] + ascent), text, font=font, fill=fill, anchor="ls")
    return xy[0], xy[1], xy[0] + round(font.getlength(text)), xy[1] + height


def draw_block(
    draw: ImageDraw.ImageDraw,
    rng: random.Random,
    lines: list[str],
    font: ImageFont.FreeTypeFont,
    pitch: int,
    size: tuple[int, int],
    fill,
    margins: tuple[int, int],
    spread: float = 1.0,
) -> None:
    """`lines`, `pitch` pixels apart, as a block at a random position (x drawn first, then y) that keeps
    `margins[0]` pixels from the top and left edges and `margins[1]` from the right and bottom ones when it fits;
    `spread` limits the room as `spread_randint` does (0: the top-left corner)."""
    near, far = margins
    block_w = round(max(font.getlength(line) for line in lines))
    block_h = pitch * (len(lines) - 1) + free_line_height(font)[1]
    x = spread_randint(rng, near, max(near, size[0] - block_w - far), spread)
    y = spread_randint(rng, near, max(near, size[1] - block_h - far), spread)
    for i, line in enumerate(lines):
        draw_free_text(draw, line, (x, y + i * pitch), font, fill)


def spread_randint(rng: random.Random, low: int, high: int, spread: float = 1.0) -> int:
    """A random integer in [low, low + spread * (high - low)]: where a text block goes, with its room limited.

    `spread` 0 always gives `low` (text at the first free patch), 1 the whole room. Reading is learnt far faster with
    text at one place first (see `--placement-spread`). At 1 it draws exactly what `rng.randint(low, high)` draws.
    """
    return low + rng.randint(0, round((high - low) * spread))


def random_free_position(
    rng: random.Random, box_size: tuple[int, int], area: tuple[int, int, int, int]
) -> tuple[int, int]:
    """A random top-left corner that keeps a `box_size` box inside `area` (x0, y0, x1, y1), off the grid."""
    x_max = max(area[0], area[2] - box_size[0])
    y_max = max(area[1], area[3] - box_size[1])
    return rng.randint(area[0], x_max), rng.randint(area[1], y_max)


def luminance(color: Color) -> float:
    """Relative brightness in 0..1 (Rec. 601 weights), to pick a readable text colour."""
    return (0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]) / 255


def contrast_text(background: Color) -> Color:
    """Near-black on light backgrounds, white on dark ones."""
    return (17, 17, 17) if luminance(background) > 0.6 else (255, 255, 255)


def as_color(value: list[int] | tuple[int, ...]) -> Color:
    """A JSON colour list as an RGB tuple."""
    return int(value[0]), int(value[1]), int(value[2])


TEXTURES = ("noise", "grain", "gradient", "lines")  # light backgrounds a visitor's picture may have under its text
TEXTURE_AMPLITUDE = 14  # largest change of a background channel, in 0-255 levels: faint, so text keeps its contrast


def texture_rng(rng: random.Random) -> random.Random:
    """A generator for a sample's texture, seeded from `rng`'s state without drawing from it: a textured sample keeps
    the same words, colours and layout as the plain one with the same seed (only the background differs)."""
    return random.Random(hashlib.sha256(repr(rng.getstate()).encode()).digest())


def check_layout_split(layout: str | None, layouts: dict) -> None:
    """Refuses a layout split a task does not draw (`None` is the level's own drawing)."""
    if layout is not None and layout not in layouts:
        raise ValueError(f"unknown layout split {layout!r}; expected one of {tuple(layouts)}")


def apply_texture(image: Image.Image, rng: random.Random) -> None:
    """Draw a faint texture over `image` (a plain background, before any text): one of `TEXTURES`, chosen and shaped by
    `texture_rng(rng)`, changing each channel by at most `TEXTURE_AMPLITUDE` towards mid-grey on light backgrounds
    and away from it on dark ones, so the text drawn over it keeps most of its contrast."""
    local = texture_rng(rng)
    kind = local.choice(TEXTURES)
    width, height = image.size
    noise = np.random.default_rng(local.getrandbits(64))
    if kind == "noise":
        delta = noise.uniform(0.0, 1.0, (height, width))
    elif kind == "grain":  # blotchy paper: coarse noise scaled up smoothly
        cell = local.randint(4, 12)
        coarse = noise.uniform(0.0, 1.0, (height // cell + 2, width // cell + 2))
        small = Image.fromarray((coarse * 255).astype(np.uint8), "L")
        delta = np.asarray(small.resize((small.width * cell, small.height * cell), Image.Resampling.BICUBIC))
        delta = delta[:height, :width] / 255.0
    elif kind == "gradient":  # a soft ramp in any direction
        angle = local.uniform(0.0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width]
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        delta = (ramp - ramp.min()) / max(1e-6, float(np.ptp(ramp)))
    else:  # ruled paper: thin lines every few pixels, horizontal or vertical
        pitch, phase = local.randint(8, 20), local.randint(0, 7)
        axis = np.arange(height if local.random() < 0.7 else width)
        lines = ((axis + phase) % pitch == 0).astype(float)
        delta = np.broadcast_to(lines[:, None] if len(axis) == height else lines[None, :], (height, width))
    pixels = np.asarray(image, dtype=np.float32)
    toward = np.where(pixels.mean(axis=2, keepdims=True) > 127, -1.0, 1.0)  # light grounds darken, dark ones lighten
    pixels += toward * TEXTURE_AMPLITUDE * delta[:, :, None]
    image.paste(Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB"))
