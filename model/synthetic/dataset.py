"""Streaming and writing synthetic datasets.

Sample `i` of a stream is drawn from its own generator seeded with `"{seed}:{i}"`, so any sample can be rebuilt on
its own (`sample_at`), a stream can be split between data-loader workers (`start`, `step`) without changing its
content, and a dataset written to disk equals the first `n` samples of the stream with the same arguments.
"""

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Unpack

from .tasks import TASKS, Sample, SampleOptions, generate_sample, task_key

Level = int | Sequence[int]


def sample_at(
    index: int,
    tasks: Sequence[str],
    seed: int,
    weights: Sequence[float] | None = None,
    level: Level = 0,
    *,
    sizes: dict[str, tuple[int, int]] | None = None,
    **options: Unpack[SampleOptions],
) -> Sample:
    """Sample number `index` of the stream defined by the other arguments.

    Args:
        index: position in the stream.
        tasks: task keys (or display names) to draw from.
        seed: stream seed.
        weights: relative frequency of each task; uniform when None.
        level: a curriculum level, or a sequence of levels to draw from uniformly (mixing easy and hard samples).
        sizes: per-task image sizes overriding `IMAGE_SIZES`.
        options: the word split (held-out words for evaluation), made-up words, placement spread and OCR options,
            passed to `generate_sample` (see `SampleOptions`).
    """
    rng = random.Random(f"{seed}:{index}")
    task = task_key(rng.choices(list(tasks), weights=weights)[0])
    sample_level = level if isinstance(level, int) else rng.choice(list(level))
    return generate_sample(task, rng, sample_level, size=(sizes or {}).get(task), **options)


def iter_samples(
    tasks: Sequence[str],
    seed: int,
    weights: Sequence[float] | None = None,
    level: Level = 0,
    *,
    sizes: dict[str, tuple[int, int]] | None = None,
    start: int = 0,
    step: int = 1,
    **options: Unpack[SampleOptions],
) -> Iterator[Sample]:
    """Stream samples forever: indices `start, start + step, ...` (see `sample_at` for the other arguments).

    Give worker `k` of `n` data-loader workers `start=k, step=n` to share one stream without duplicates.
    """
    if not tasks:
        raise ValueError("iter_samples needs at least one task")
    if weights is not None and len(weights) != len(tasks):
        raise ValueError(f"{len(weights)} weights for {len(tasks)} tasks")
    index = start
    while True:
        yield sample_at(index, tasks, seed, weights, level, sizes=sizes, **options)
        index += step


def write_dataset(
    out_dir: str | Path,
    tasks: Sequence[str],
    n: int,
    seed: int,
    level: Level = 0,
    *,
    weights: Sequence[float] | None = None,
    split: str = "all",
    sizes: dict[str, tuple[int, int]] | None = None,
    spread: float = 1.0,
) -> Path:
    """Write the first `n` samples of a stream as PNG files plus a LLaVA-style `data.json`.

    Each record is `{"id", "image": "images/000000_ocr.png", "conversations", "task", "target", "level"}`; image
    paths are relative to `out_dir`.

    Returns:
        The path of `data.json`.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    samples = iter_samples(tasks, seed, weights, level, split=split, sizes=sizes, spread=spread)
    for i in range(n):
        sample = next(samples)
        image_path = f"images/{i:06d}_{sample.task}.png"
        sample.image.save(out_dir / image_path)
        records.append(
            {
                "id": f"{sample.task}-{seed}-{i:06d}",
                "image": image_path,
                "conversations": sample.conversations,
                "task": sample.task,
                "target": sample.target,
                "level": sample.level,
            }
        )
    data_path = out_dir / "data.json"
    data_path.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return data_path


def example_samples(spread: float = 1.0) -> Iterator[tuple[str, Sample]]:
    """The app's example images as ("TASK/TASK-I.png", sample): one per task at each of levels 0, 1 and 2, held-out
    words, fixed seeds (so a checker can rebuild the target of a shipped image)."""
    for task in TASKS:
        for i, level in enumerate((0, 1, 2), start=1):
            sample = generate_sample(task, random.Random(f"example:{task}:{i}"), level, split="test", spread=spread)
            yield f"{task}/{task}-{i}.png", sample
