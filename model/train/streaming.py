"""Synthetic training data rendered on the fly from `model.synthetic` (OCR strips, posters, webpages, scenes).

Sample `i` of a synthetic stream is a pure function of (seed, i), so the stream is split between processes and
data-loader workers by index (shard `k` of `n` takes `start + k, start + k + n, ...`) and a resumed run continues
at the index where the interrupted one stopped. Evaluation uses held-out words (`split="test"`) and another seed.

With a curriculum, the levels given are opened one after another over the run: the first part of the stream draws
from the first level only, the next part from the first two, and so on, up to the full mix; the level set of a
sample depends only on its index, so sharding and resuming are unaffected. The placement spread can ramp the same way:
from its first value at the start of the run to its second at the end (text at one place first, then anywhere).
"""

import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..synthetic import sample_at, task_key
from .data import Encoder, SkipCounter, SkipSample

# Evaluation samples come from their own stream so they never repeat a training sample.
EVAL_SEED_OFFSET = 1_000_003


class OcrOptions(NamedTuple):
    """How one sample's OCR text is drawn (`generate_sample`'s OCR options of the same names)."""

    jitter: int
    fonts: str | None
    visitor_spread: float
    visitor_size_spread: float | None
    visitor_small: bool = False
    visitor_canvas: bool = False


def _encode(encoder: Encoder, sample) -> dict:
    return encoder(sample.conversations, [sample.image])


class SyntheticStream(IterableDataset):
    """Endless stream of encoded synthetic samples, sharded over processes and workers.

    Args:
        tasks: synthetic task keys, e.g. ["ocr", "scene"].
        seed: stream seed.
        level: curriculum level, or several levels to mix.
        encoder: turns a conversation and its image into a row for the stage.
        rank, world_size: this process and the number of processes.
        start: global index of the first sample (samples already consumed by an interrupted run).
        run_samples: samples in the whole run (all processes), for a curriculum or a spread ramp.
        curriculum: open the levels one after another over the run (needs `run_samples`); otherwise mix them all.
        made_up_words: share of training words replaced by random strings of letters and digits.
        spread: (first, last) placement spread of grid text (see `generate_sample`), ramped linearly over the run.
        fixed_place_share: share of samples drawn at spread 0 (text at one place) whatever the ramp says.
        ocr_jitter: (first, last) pixel jitter of OCR grid text off the patch grid, ramped linearly over the first
            `ocr_jitter_ramp` of the run; samples at the fixed place stay on the grid.
        ocr_visitor_share: share of the other samples whose OCR text is drawn visitor style in the training fonts.
        ocr_visitor_fonts: the font split those samples draw from: "train" (six DejaVu faces) or "wide-train" (the
            many free families of `make fonts`; see `model.synthetic.render.font_split`).
        ocr_visitor_spread: (first, last) room and size range of those samples' text (0 the anchor, 1 anywhere at
            any size; `generate_sample`'s `ocr_visitor_spread`), ramped like `ocr_jitter`.
        ocr_visitor_size_spread: (first, last) size range alone, ramped the same way, with `ocr_visitor_spread` then
            narrowing only the room (so a curriculum can open the place before the size); None follows it.
        ocr_visitor_anchor_share: share of the visitor-style samples kept at the anchor (32 px at the top-left
            corner) whatever the ramps say, as `fixed_place_share` keeps grid text at one place.
        ocr_visitor_small_share: share of the other visitor-style samples drawn at the smallest quarter of the open
            size range (`generate_sample`'s `ocr_visitor_small`): small type is what a small model reads worst.
        ocr_visitor_canvas_share: share of the visitor-style samples off the anchor drawn on a canvas of another
            shape (`generate_sample`'s `ocr_visitor_canvas`): a visitor's image is seldom the OCR task's 4:1 strip.
        layout_mix: share of the other samples whose posters, webpages and scenes are drawn in one of the generator's
            training layouts (`layout="train"`; the held-out layouts are never drawn).
        texture_share: share of the other samples drawn over a faint background texture.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        seed: int,
        level: int | Sequence[int],
        encoder: Encoder,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
        run_samples: int | None = None,
        curriculum: bool = False,
        made_up_words: float = 0.0,
        spread: tuple[float, float] = (1.0, 1.0),
        fixed_place_share: float = 0.0,
        ocr_jitter: tuple[int, int] = (0, 0),
        ocr_jitter_ramp: float = 1.0,
        ocr_visitor_share: float = 0.0,
        ocr_visitor_fonts: str = "train",
        ocr_visitor_spread: tuple[float, float] = (1.0, 1.0),
        ocr_visitor_size_spread: tuple[float, float] | None = None,
        ocr_visitor_anchor_share: float = 0.0,
        ocr_visitor_small_share: float = 0.0,
        ocr_visitor_canvas_share: float = 0.0,
        layout_mix: float = 0.0,
        texture_share: float = 0.0,
    ):
        pairs = (spread, ocr_jitter, ocr_visitor_spread, ocr_visitor_size_spread or (0.0, 0.0))
        ramps = any(first != last for first, last in pairs)
        if (curriculum or ramps) and not run_samples:
            raise ValueError("a curriculum, a spread ramp or a jitter ramp needs run_samples (the length of the run)")
        self.tasks = [task_key(task) for task in tasks]  # fails early on an unknown task name
        self.made_up_words = made_up_words
        self.seed, self.level, self.encoder = seed, level, encoder
        self.rank, self.world_size, self.start = rank, world_size, start
        self.run_samples, self.curriculum, self.spread = run_samples, curriculum, spread
        self.fixed_place_share = fixed_place_share
        self.ocr_jitter, self.ocr_jitter_ramp, self.ocr_visitor_share = ocr_jitter, ocr_jitter_ramp, ocr_visitor_share
        self.ocr_visitor_fonts, self.ocr_visitor_spread = ocr_visitor_fonts, ocr_visitor_spread
        self.ocr_visitor_size_spread, self.ocr_visitor_anchor_share = ocr_visitor_size_spread, ocr_visitor_anchor_share
        self.ocr_visitor_small_share, self.ocr_visitor_canvas_share = ocr_visitor_small_share, ocr_visitor_canvas_share
        self.layout_mix, self.texture_share = layout_mix, texture_share
        self.skipped = SkipCounter()

    def levels_at(self, index: int) -> list[int]:
        """The level (or levels, drawn uniformly) of sample `index`."""
        levels = [self.level] if isinstance(self.level, int) else list(self.level)
        if not self.curriculum or len(levels) == 1 or not self.run_samples:  # the constructor requires run_samples
            return levels
        phase = min(len(levels) - 1, index * len(levels) // self.run_samples)
        return levels[: phase + 1]

    def at_fixed_place(self, index: int) -> bool:
        """Whether sample `index` is one of the `fixed_place_share` with its text at the first free patch."""
        return bool(self.fixed_place_share) and (
            random.Random(f"{self.seed}:{index}:place").random() < self.fixed_place_share
        )

    def spread_at(self, index: int) -> float:
        """The placement spread of sample `index`: the first value, moving linearly to the last over the run."""
        if self.at_fixed_place(index):
            return 0.0
        first, last = self.spread
        if first == last or not self.run_samples:  # the constructor requires run_samples for a ramp
            return first
        return first + (last - first) * min(1.0, index / self.run_samples)

    def ocr_options_at(self, index: int) -> OcrOptions:
        """How sample `index`'s OCR text is drawn: on the grid at the fixed place, else the jitter ramp's value and,
        for `ocr_visitor_share` of the samples, the `ocr_visitor_fonts` split visitor style at the visitor ramps'
        values (at the anchor for `ocr_visitor_anchor_share` of those)."""
        if self.at_fixed_place(index):
            return OcrOptions(0, None, 1.0, None)
        progress = min(1.0, index / (self.ocr_jitter_ramp * self.run_samples)) if self.run_samples else 1.0

        def ramped(pair: tuple[float, float]) -> float:
            return pair[0] + (pair[1] - pair[0]) * progress

        jitter = round(ramped(self.ocr_jitter))
        visitor = bool(self.ocr_visitor_share) and (
            random.Random(f"{self.seed}:{index}:visitor").random() < self.ocr_visitor_share
        )
        if not visitor:
            return OcrOptions(jitter, None, 1.0, None)
        if self.ocr_visitor_anchor_share and (
            random.Random(f"{self.seed}:{index}:anchor").random() < self.ocr_visitor_anchor_share
        ):
            return OcrOptions(jitter, self.ocr_visitor_fonts, 0.0, 0.0)
        sizes = self.ocr_visitor_size_spread
        small = bool(self.ocr_visitor_small_share) and (
            random.Random(f"{self.seed}:{index}:small").random() < self.ocr_visitor_small_share
        )
        canvas = bool(self.ocr_visitor_canvas_share) and (
            random.Random(f"{self.seed}:{index}:canvas").random() < self.ocr_visitor_canvas_share
        )
        return OcrOptions(
            jitter,
            self.ocr_visitor_fonts,
            ramped(self.ocr_visitor_spread),
            None if sizes is None else ramped(sizes),
            small,
            canvas,
        )

    def look_at(self, index: int) -> tuple[bool, str | None]:
        """(texture, layout split or None) of sample `index`: plain and the level's own layout at the fixed place,
        else a texture for `texture_share` of the samples and a training layout for `layout_mix` of them."""
        if self.at_fixed_place(index):
            return False, None
        texture = bool(self.texture_share) and (
            random.Random(f"{self.seed}:{index}:texture").random() < self.texture_share
        )
        mixed = bool(self.layout_mix) and random.Random(f"{self.seed}:{index}:layout").random() < self.layout_mix
        return texture, ("train" if mixed else None)

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        shard, num_shards = self.rank * num_workers + worker_id, self.world_size * num_workers
        index = self.start + shard
        while True:
            ocr = self.ocr_options_at(index)
            texture, layout = self.look_at(index)
            sample = sample_at(
                index,
                self.tasks,
                self.seed,
                level=self.levels_at(index),
                split="train",
                made_up_words=self.made_up_words,
                spread=self.spread_at(index),
                ocr_jitter=ocr.jitter,
                ocr_fonts=ocr.fonts,
                ocr_visitor_spread=ocr.visitor_spread,
                ocr_visitor_size_spread=ocr.visitor_size_spread,
                ocr_visitor_small=ocr.visitor_small,
                ocr_visitor_canvas=ocr.visitor_canvas,
                texture=texture,
                layout=layout,
            )
            index += num_shards
            try:
                yield _encode(self.encoder, sample)
            except SkipSample as reason:
                self.skipped.note(f"{sample.task}@{self.seed}", str(reason))


class SyntheticEvalSet(Dataset):
    """A fixed held-out set: the first `size` samples of the evaluation stream, with words unseen in training."""

    def __init__(self, tasks: Sequence[str], seed: int, level: int | Sequence[int], encoder: Encoder, size: int):
        self.tasks = [task_key(task) for task in tasks]
        self.seed, self.level, self.encoder, self.size = seed + EVAL_SEED_OFFSET, level, encoder, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        for offset in range(100):  # a skipped sample (e.g. longer than --max-length) is replaced by a later one
            sample = sample_at(index + offset * self.size, self.tasks, self.seed, level=self.level, split="test")
            try:
                return _encode(self.encoder, sample)
            except SkipSample:
                continue
        raise RuntimeError("Could not encode any evaluation sample; is --max-length too small?")
