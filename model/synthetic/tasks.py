"""The task registry and `generate_sample`: one synthetic image with its LLaVA-style conversation and target.

Each task module (`ocr`, `poster`, `webpage`, `scene`) exposes `generate(rng, level, size, words)` returning the
image and its target, and `MIN_SIZE`. All randomness comes from the `random.Random` passed in, so a sample is a pure
function of the generator's state: same seed, same pixels.
"""

import random
from dataclasses import dataclass
from typing import TypedDict

from PIL import Image

from ..shared import IMAGE_PLACEHOLDER as IMAGE_TOKEN
from ..shared import TASK_KEYS, task_instructions
from . import ocr, poster, scene, webpage
from .answers import format_answer, pick_instruction
from .config import IMAGE_SIZES, PATCH_SIZE, VISITOR_CANVASES, check_level, check_size
from .vocab import word_bank

TASK_MODULES = {"ocr": ocr, "poster": poster, "webpage": webpage, "scene": scene}
TASKS = tuple(TASK_MODULES)

# display name -> the canonical instruction, used by the app's presets and by evaluation
TASK_INSTRUCTIONS: dict[str, str] = task_instructions()


@dataclass
class Sample:
    """One training or evaluation example.

    Attributes:
        task: task key, one of `TASKS`.
        image: the rendered RGB image, already at its final size (no resize needed).
        conversations: LLaVA format, `[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}]`.
        target: ground-truth fields that `model.evaluation.score_sample` compares a prediction with.
        level: the curriculum level it was drawn at.
    """

    task: str
    image: Image.Image
    conversations: list[dict]
    target: dict
    level: int = 0

    @property
    def answer(self) -> str:
        """The reference answer (the last gpt turn)."""
        return self.conversations[-1]["value"]


class SampleOptions(TypedDict, total=False):
    """How a sample is drawn beside its task, level and size: `generate_sample`'s keyword options (documented and
    defaulted there), which the streams (`sample_at`, `iter_samples`) pass through unchanged."""

    split: str
    made_up_words: float
    spread: float
    ocr_jitter: int
    ocr_fonts: str | None
    ocr_visitor_spread: float
    ocr_visitor_size_spread: float | None
    ocr_visitor_small: bool
    ocr_visitor_canvas: bool
    texture: bool
    layout: str | None


def task_key(task: str) -> str:
    """A task key from either a key ("scene") or a display name ("Scene description")."""
    key = TASK_KEYS.get(task, task)
    if key not in TASK_MODULES:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS} or {tuple(TASK_KEYS)}")
    return key


def generate_sample(
    task: str,
    rng: random.Random,
    level: int = 0,
    *,
    size: tuple[int, int] | None = None,
    split: str = "all",
    made_up_words: float = 0.0,
    spread: float = 1.0,
    ocr_jitter: int = 0,
    ocr_fonts: str | None = None,
    ocr_visitor_spread: float = 1.0,
    ocr_visitor_size_spread: float | None = None,
    ocr_visitor_small: bool = False,
    ocr_visitor_canvas: bool = False,
    texture: bool = False,
    layout: str | None = None,
) -> Sample:
    """Render one sample of `task` at curriculum `level`.

    Args:
        task: task key or display name.
        rng: source of all randomness; the sample is determined by its state.
        level: 0 (easiest) .. `MAX_LEVEL`; see each task module's docstring.
        size: (width, height) overriding `IMAGE_SIZES[task]`; sides must be multiples of the patch size.
        split: which part of the English word list to draw words from: "all", "train" or "test" (held out).
        made_up_words: share of drawn words replaced by random strings of letters and digits (a training aid against
            memorising).
        spread: share of the free room that grid text may be moved within, 0 (always at the first free patch, which
            teaches glyphs fastest) to 1 (anywhere; the default).
        ocr_jitter: OCR only (other tasks ignore it): grid text moved off the patch grid by up to this many pixels
            each way, 0 (on the grid; the default) to `PATCH_SIZE`.
        ocr_fonts: OCR only: None (the level's own drawing; the default), or a font split ("train", "test",
            "wide-train", "wide-test"; `render.font_split`) to draw the text visitor style in that split's fonts,
            16-48 px, at any pixel, either polarity.
        ocr_visitor_spread: visitor-style OCR only: 1 (the default) any place and size as above, 0 the anchor
            (32 px at the top-left corner), between the two a narrower room and size range.
        ocr_visitor_size_spread: visitor-style OCR only: the size range alone, 0 (32 px) to 1 (16-48 px), with
            `ocr_visitor_spread` then narrowing only the room; None (the default) follows `ocr_visitor_spread`.
        ocr_visitor_small: visitor-style OCR only: draw from the smallest quarter of the open size range (16-24 px
            at full size spread); off by default.
        ocr_visitor_canvas: visitor-style OCR only, when `size` is not given: draw on one of `VISITOR_CANVASES`
            (landscape to square, the same area) instead of the task's 4:1 strip; off by default.
        texture: draw a faint texture (noise, paper grain, a soft gradient or ruled lines, `render.apply_texture`)
            under the text or shapes instead of a plain background; off by default.
        layout: posters, webpages and scenes (OCR ignores it): None (the level's own layout; the default), or "train"
            / "test" to draw one of that split's layouts (each module's `LAYOUTS`; "test" is held out from training,
            like the test words and fonts). Posters and webpages apply it at levels 0-2, scenes at every level.

    Returns:
        The sample, with a paraphrased instruction and the task's fixed answer template.
    """
    key = task_key(task)
    module = TASK_MODULES[key]
    check_level(level)
    if not 0.0 <= spread <= 1.0:
        raise ValueError(f"spread must be between 0 and 1, got {spread}")
    for name, value in (
        ("ocr_visitor_spread", ocr_visitor_spread),
        ("ocr_visitor_size_spread", ocr_visitor_size_spread),
    ):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    if not 0 <= ocr_jitter <= PATCH_SIZE:
        raise ValueError(f"ocr_jitter must be between 0 and {PATCH_SIZE} pixels, got {ocr_jitter}")
    if size is None and key == "ocr" and ocr_fonts is not None and ocr_visitor_canvas:
        size = rng.choice(VISITOR_CANVASES)
    size = check_size(size or IMAGE_SIZES[key], module.MIN_SIZE)
    instruction = pick_instruction(key, rng)
    words = word_bank(split, made_up_words)
    if key == "ocr":
        image, target = ocr.generate(
            rng,
            level,
            size,
            words,
            spread,
            jitter=ocr_jitter,
            fonts=ocr_fonts,
            texture=texture,
            visitor_spread=ocr_visitor_spread,
            visitor_size_spread=ocr_visitor_size_spread,
            visitor_small=ocr_visitor_small,
        )
    else:
        image, target = module.generate(rng, level, size, words, spread, texture=texture, layout=layout)
    conversations = [
        {"from": "human", "value": f"{IMAGE_TOKEN}\n{instruction}"},
        {"from": "gpt", "value": format_answer(key, target)},
    ]
    return Sample(key, image, conversations, target, level)
