"""Synthetic training data for the small EVE model: OCR strips, posters, webpages and shape scenes.

Images are rendered at sizes whose area matches the image processor's target and whose sides are multiples of the
16 px patch, so nothing is resized and grid-aligned monospace text stays one character per patch column.

    from model.synthetic import iter_samples
    sample = next(iter_samples(["ocr", "scene"], seed=0, level=0))
    sample.image, sample.conversations, sample.target
"""

from .answers import format_answer
from .config import IMAGE_AREA, IMAGE_SIZES, MAX_LEVEL, PATCH_SIZE
from .dataset import example_samples, iter_samples, sample_at, write_dataset
from .tasks import IMAGE_TOKEN, TASK_INSTRUCTIONS, TASK_KEYS, TASKS, Sample, SampleOptions, generate_sample, task_key
from .vocab import is_held_out, word_bank

__all__ = [
    "IMAGE_AREA",
    "IMAGE_SIZES",
    "IMAGE_TOKEN",
    "MAX_LEVEL",
    "PATCH_SIZE",
    "TASKS",
    "TASK_INSTRUCTIONS",
    "TASK_KEYS",
    "Sample",
    "SampleOptions",
    "example_samples",
    "format_answer",
    "generate_sample",
    "is_held_out",
    "iter_samples",
    "sample_at",
    "task_key",
    "word_bank",
    "write_dataset",
]
