"""Webpage task: a tiny landing page (site bar, nav links, headline, grey paragraph, button) read back by field.

Layout in 16 px patch rows (256 x 144 = 16 columns x 9 rows), in bands of two rows: rows 0-1 a coloured bar with the
site name, rows 2-3 the links, rows 4-5 the headline, row 6 a grey paragraph (never scored), rows 7-8 a button. Levels
0-2 draw every character in its own 16 px patch column, 32 px tall (one line per band), as OCR and posters do: 0
everything left-aligned, on white; 1 every field on any column of its band, on a light tint; 2 as 1 with bars between
the links (not part of the answer).
Level 3 keeps the bands but sets the text in any DejaVu font and size, off the grid. Options, off by default: a faint
background texture, and the bands in the other orders of `LAYOUTS` (links in a footer held out for evaluation).
"""

import random
from typing import Any

from PIL import Image, ImageDraw

from . import render
from .config import PATCH_SIZE
from .vocab import WordBank, load_vocab, vocab_bank

MIN_SIZE = (10 * PATCH_SIZE, 9 * PATCH_SIZE)
LINK_COLOR = (29, 78, 216)
HEADLINE_COLOR = (17, 24, 39)
PARAGRAPH_COLOR = (140, 140, 140)
FOOTER_COLOR = (229, 231, 235)  # the light grey footer of the held-out layout; links stay dark blue on it
# Grid layouts (levels 0-2) by split, like the word list and the fonts: training keeps the links above the button;
# evaluation alone moves the nav links to a footer at the bottom and the button to the left under the headline.
LAYOUTS: dict[str, tuple[str, ...]] = {"train": ("bands", "hero"), "test": ("footer-nav",)}
Box = tuple[int, int, int, int]


def pick_content(rng: random.Random, words: WordBank, max_chars: int) -> dict:
    """Site name, 2-3 links, a 1-2 word headline in Title Case, a button label: each fits one line."""
    site = (vocab_bank("webpage", "site_names") if rng.random() < 0.5 else words).pick(rng, min(8, max_chars))
    link_bank = vocab_bank("webpage", "links")
    n_links = rng.randint(2, 3) if max_chars >= 3 * link_bank.min_len + 2 else 2
    links = link_bank.pick_phrase(rng, n_links, max_chars)
    n_words = rng.randint(1, 2)
    headline = " ".join(w.capitalize() for w in words.pick_phrase(rng, n_words, max_chars))
    button = vocab_bank("webpage", "buttons").pick(rng, max_chars - 2)
    return {"site": site, "links": links, "headline": headline, "button": button}


def paragraph(rng: random.Random, words: WordBank, max_chars: int) -> str:
    """Filler words for the grey paragraph line."""
    text = words.pick(rng, max_chars)
    while len(text) + 1 + words.min_len <= max_chars:
        text += " " + words.pick(rng, max_chars - len(text) - 1)
    return text


def draw_button(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], color) -> None:
    """A rounded button half a patch wider than its label on each side, inside the label's rows."""
    x0, y0, x1, y1 = box
    draw.rounded_rectangle([x0 - PATCH_SIZE // 2, y0 + 1, x1 + PATCH_SIZE // 2 - 1, y1 - 2], radius=6, fill=color)


def draw_on_grid(
    draw, rng: random.Random, level: int, content: dict, words: WordBank, size, colors: dict, spread: float = 1.0
) -> dict[str, Box]:
    """The page on the patch grid, one character per 16 px patch column and 32 px tall like OCR and posters, one line
    per band (see the module docstring); above level 0 each field sits on any column (`spread` < 1: near the left).
    Returns the boxes of the site, links, headline and button texts."""
    cols = size[0] // PATCH_SIZE
    bold = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    regular = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono")
    small = render.grid_font(PATCH_SIZE, PATCH_SIZE, "mono")

    def col_for(text: str) -> int:  # left at level 0, anywhere on the grid (keeping a column margin) above it
        return 1 if level == 0 else render.spread_randint(rng, 1, max(1, cols - 1 - len(text)), spread)

    draw.rectangle([0, 0, size[0] - 1, 2 * PATCH_SIZE - 1], fill=colors["bar"])
    boxes = {"site": render.draw_grid_text(draw, content["site"], col_for(content["site"]), 0, bold, colors["site"])}
    separator = " | " if level == 2 else "  "  # level 2: bars between links, to be left out of the answer
    links = separator.join(content["links"])
    if len(links) > cols - 2:
        links = " ".join(content["links"])
    boxes["links"] = render.draw_grid_text(draw, links, col_for(links), 2, regular, LINK_COLOR)
    boxes["headline"] = render.draw_grid_text(
        draw, content["headline"], col_for(content["headline"]), 4, bold, HEADLINE_COLOR
    )
    render.draw_grid_text(draw, paragraph(rng, words, cols - 2), 1, 6, small, PARAGRAPH_COLOR)
    label = content["button"]
    label_col = col_for(label)
    x0, x1 = label_col * PATCH_SIZE, (label_col + len(label)) * PATCH_SIZE
    draw_button(draw, (x0, 7 * PATCH_SIZE, x1, 9 * PATCH_SIZE), colors["button"])
    boxes["button"] = render.draw_grid_text(draw, label, label_col, 7, bold, (255, 255, 255))
    return boxes


def draw_layout(
    draw, rng: random.Random, level: int, content: dict, words: WordBank, size, colors: dict, layout: str, spread=1.0
) -> dict[str, Box]:
    """The page on the patch grid in one of `LAYOUTS` (for "bands", `draw_on_grid`), the same bands in another order:
    "hero" puts the headline under the bar and the links above the button; "footer-nav" (held out for evaluation) puts
    the button, always left-aligned, under the headline and the links at the bottom on a grey footer.

    Returns:
        The boxes of the site, links, headline and button texts.
    """
    if layout == "bands":
        return draw_on_grid(draw, rng, level, content, words, size, colors, spread)
    rows_of = {"hero": (2, 4, 5, 7), "footer-nav": (2, 6, 7, 4)}  # headline, paragraph, links, button (top row)
    if layout not in rows_of:
        raise ValueError(f"unknown webpage layout {layout!r}; expected one of {LAYOUTS}")
    headline_row, paragraph_row, links_row, button_row = rows_of[layout]
    cols = size[0] // PATCH_SIZE
    bold = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono-bold")
    regular = render.grid_font(PATCH_SIZE, 2 * PATCH_SIZE, "mono")
    small = render.grid_font(PATCH_SIZE, PATCH_SIZE, "mono")

    def col_for(text: str) -> int:
        return 1 if level == 0 else render.spread_randint(rng, 1, max(1, cols - 1 - len(text)), spread)

    draw.rectangle([0, 0, size[0] - 1, 2 * PATCH_SIZE - 1], fill=colors["bar"])
    if layout == "footer-nav":
        draw.rectangle([0, links_row * PATCH_SIZE, size[0] - 1, size[1] - 1], fill=FOOTER_COLOR)
    boxes = {"site": render.draw_grid_text(draw, content["site"], col_for(content["site"]), 0, bold, colors["site"])}
    links = (" | " if level == 2 else "  ").join(content["links"])
    if len(links) > cols - 2:
        links = " ".join(content["links"])
    boxes["links"] = render.draw_grid_text(draw, links, col_for(links), links_row, regular, LINK_COLOR)
    boxes["headline"] = render.draw_grid_text(
        draw, content["headline"], col_for(content["headline"]), headline_row, bold, HEADLINE_COLOR
    )
    render.draw_grid_text(draw, paragraph(rng, words, cols - 2), 1, paragraph_row, small, PARAGRAPH_COLOR)
    label = content["button"]
    label_col = 1 if layout == "footer-nav" else col_for(label)
    x0, x1 = label_col * PATCH_SIZE, (label_col + len(label)) * PATCH_SIZE
    draw_button(draw, (x0, button_row * PATCH_SIZE, x1, (button_row + 2) * PATCH_SIZE), colors["button"])
    boxes["button"] = render.draw_grid_text(draw, label, label_col, button_row, bold, (255, 255, 255))
    return boxes


def draw_free(draw, rng: random.Random, content: dict, words: WordBank, size, colors: dict) -> None:
    """The same bands with text in random DejaVu fonts and sizes at random horizontal offsets."""
    width = size[0]
    font_name = rng.choice(render.FREE_FONTS)

    def put(text: str, band: tuple[int, int], size_range: tuple[int, int], fill, name: str = font_name) -> tuple:
        font = render.fit_free_font(text, name, rng.randint(*size_range), width - 16)
        while render.free_line_height(font)[1] > band[1] - band[0] - 2 and font.size > 8:
            font = render.fit_free_font(text, name, int(font.size) - 1, width - 16)
        height = render.free_line_height(font)[1]
        x = rng.randint(6, max(6, width - round(font.getlength(text)) - 10))
        y = band[0] + (band[1] - band[0] - height) // 2
        return render.draw_free_text(draw, text, (x, y), font, fill)

    draw.rectangle([0, 0, width - 1, 2 * PATCH_SIZE - 1], fill=colors["bar"])
    put(content["site"], (0, 32), (16, 26), colors["site"])
    put("  ".join(content["links"]), (32, 64), (12, 18), LINK_COLOR)
    put(content["headline"], (64, 96), (18, 28), HEADLINE_COLOR, name=font_name.split("-")[0] + "-bold")
    put(paragraph(rng, words, 24), (96, 112), (9, 12), PARAGRAPH_COLOR)
    label_font = render.fit_free_font(content["button"], font_name, rng.randint(14, 20), width - 40)
    label_w, label_h = round(label_font.getlength(content["button"])), render.free_line_height(label_font)[1]
    x = rng.randint(14, width - label_w - 14)
    draw.rounded_rectangle([x - 10, 114, x + label_w + 10, 142], radius=6, fill=colors["button"])
    render.draw_free_text(draw, content["button"], (x, 128 - label_h // 2), label_font, (255, 255, 255))


def generate(
    rng: random.Random, level: int, size: tuple[int, int], words: WordBank, spread: float = 1.0, **options: Any
) -> tuple[Image.Image, dict]:
    """Render one webpage; the target holds site, links (in order), headline and button as printed.

    `spread` limits how far grid text (levels 1-2) is moved from the left edge (see `render.spread_randint`);
    `texture` draws a faint texture on the page (`render.apply_texture`); `layout` ("train" or "test") draws levels
    0-2 in one of that split's `LAYOUTS` instead of the level's own (level 3 keeps its free drawing).
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
    """`generate`, also returning where each field was drawn (empty at level 3): the layouts' checks."""
    render.check_layout_split(layout, LAYOUTS)
    vocab = load_vocab()["webpage"]
    colors = {"button": render.as_color(rng.choice(vocab["button_colors"]))}
    if level < 3:  # a light bar with dark site text: grid text is dark on light in every task (see poster.generate)
        bar = rng.choice(vocab["light_bars"])
        colors |= {"bar": render.as_color(bar["background"]), "site": render.as_color(bar["text"])}
    else:
        colors |= {"bar": render.as_color(rng.choice(vocab["bar_colors"])), "site": (255, 255, 255)}
    background = (255, 255, 255) if level == 0 else render.as_color(rng.choice(vocab["page_backgrounds"]))
    content = pick_content(rng, words, size[0] // PATCH_SIZE - 2)
    image = Image.new("RGB", size, background)
    if texture:
        render.apply_texture(image, rng)
    draw = ImageDraw.Draw(image)
    boxes: dict[str, Box] = {}
    if level < 3 and layout is not None:
        boxes = draw_layout(draw, rng, level, content, words, size, colors, rng.choice(LAYOUTS[layout]), spread)
    elif level < 3:
        boxes = draw_on_grid(draw, rng, level, content, words, size, colors, spread)
    else:
        draw_free(draw, rng, content, words, size, colors)
    return image, content, boxes
