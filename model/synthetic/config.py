"""Image geometry shared by every synthetic task: the one place to change canvas sizes.

Why these sizes: the EVE image processor rescales every image to an area of `IMAGE_AREA` pixels with sides that are
multiples of `PATCH_SIZE`. Rendering at exactly such a size means no resize happens, so a glyph drawn in one 16 px
column stays in one patch column, which is what lets a small model learn to read (see the project's training notes).
Override a size per call (`generate_sample(..., size=(w, h))`) rather than editing this table for experiments.
"""

PATCH_SIZE = 16  # effective patch size of the vision embedding, in pixels
IMAGE_AREA = 192 * 192  # pixel area the image processor rescales to

# task key -> (width, height); each is a multiple of PATCH_SIZE with area IMAGE_AREA.
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "ocr": (384, 96),  # 24 x 6 patches: one or two lines of up to 24 characters
    "poster": (192, 192),  # 12 x 12 patches: 12 characters per line
    "webpage": (256, 144),  # 16 x 9 patches: 16 characters per line, 9 rows
    "scene": (192, 192),  # 3 x 3 grid of 64 px cells, each 4 x 4 patches
}

# Landscape and square canvases of the same area (multiples of PATCH_SIZE), 4:1 to 1:1: what the processor makes of
# a word typed into a paint program, whose canvas has any shape. Visitor-style OCR may be drawn on one of these
# (`generate_sample`'s `ocr_visitor_canvas`) instead of the OCR task's own 4:1 strip.
VISITOR_CANVASES: tuple[tuple[int, int], ...] = ((384, 96), (320, 112), (288, 128), (256, 144), (224, 160), (192, 192))

MAX_LEVEL = 3  # curriculum levels run 0 (easiest) .. MAX_LEVEL


def check_size(size: tuple[int, int], min_size: tuple[int, int] = (PATCH_SIZE, PATCH_SIZE)) -> tuple[int, int]:
    """Validate a canvas size: sides must be multiples of the patch size so that the grid lines up.

    Args:
        size: (width, height) in pixels.
        min_size: smallest (width, height) the task's layout can hold.

    Returns:
        The size as a tuple of ints.
    """
    width, height = int(size[0]), int(size[1])
    if width % PATCH_SIZE or height % PATCH_SIZE:
        raise ValueError(f"image size {width}x{height} must have sides that are multiples of {PATCH_SIZE}")
    if width < min_size[0] or height < min_size[1]:
        raise ValueError(
            f"image size {width}x{height} is smaller than the layout's minimum {min_size[0]}x{min_size[1]}"
        )
    return width, height


def check_level(level: int) -> int:
    """Validate a curriculum level (0 .. MAX_LEVEL)."""
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"level must be between 0 and {MAX_LEVEL}, got {level}")
    return level
