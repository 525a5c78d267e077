"""Training data in the LLaVA format, turned into model rows lazily (one sample at a time, in `__getitem__`).

`--data` is a JSON list (or JSONL) whose items are sample dicts, or file names of per-sample JSON files relative to
the list's folder. A sample is `{"id", "image": str | list[str] (optional), "conversations": [{"from": "human" |
"gpt", "value"}]}`; image paths are relative to `--image-folder` (default: the list's folder).

Preprocessing follows the official recipe: a sample whose first turn is not from the human is skipped; with one
image, its `<image>` placeholder moves to the start of its turn followed by a newline; rows longer than
`--max-length` tokens are cut, unless the cut falls inside an image (then the sample is skipped). Skipped samples are
counted and logged, and the dataset serves the next sample in their place.

`<image>` is the data's placeholder; the processor's is its vocabulary token (`<|image_pad|>`), so `to_messages`
translates one into the other where the data is read. Label masking (only answers and turn ends are supervised) is
the training rows' business and lives here (`tokenize_conversation`), not in the processor.
"""

import json
import logging
import random
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..constants import IGNORE_INDEX
from ..image_processing_eve import ImageInput
from ..processing_eve import EveProcessor
from ..shared import IMAGE_PLACEHOLDER as DEFAULT_IMAGE_TOKEN
from ..shared import from_llava

logger = logging.getLogger(__name__)

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
ROW_KEYS = ("input_ids", "mm_token_type_ids", "labels")


class SkipSample(Exception):
    """A sample that cannot be trained on; the message says why."""


class SkipCounter:
    """Counts skipped samples by reason and logs the first few, then every 100th, so large datasets stay readable."""

    def __init__(self):
        self.counts: Counter[str] = Counter()

    def note(self, sample_id: Any, reason: str) -> None:
        self.counts[reason] += 1
        total = sum(self.counts.values())
        if total <= 10 or total % 100 == 0:
            logger.warning("Skipped sample %s: %s (%d skipped so far)", sample_id, reason, total)


def to_messages(conversations: list[dict], num_images: int, keep_images: bool = True) -> list[dict[str, str]]:
    """LLaVA turns (`from`/`value`) as processor messages (`role`/`content`), placeholders placed as officially.

    Raises:
        SkipSample: first turn not from the human, unknown role, turns that do not alternate, or placeholders that
            do not match the images.
    """
    if not conversations:
        raise SkipSample("no conversation")
    roles = [ROLES.get(turn.get("from", "")) for turn in conversations]
    if roles[0] != "user":
        raise SkipSample("first turn is not from the human")
    if None in roles or any(roles[i] == roles[i - 1] for i in range(1, len(roles))):
        raise SkipSample(f"turns must alternate human/gpt, got {[t.get('from') for t in conversations]}")
    texts = [str(turn.get("value", "")) for turn in conversations]
    if not keep_images:
        texts = [t.replace(DEFAULT_IMAGE_TOKEN + "\n", "").replace(DEFAULT_IMAGE_TOKEN, "").strip() for t in texts]
    elif num_images == 1:
        # Official preprocess_multimodal: the placeholder goes to the start of its turn, followed by a newline.
        if not any(DEFAULT_IMAGE_TOKEN in t for t in texts):
            texts[0] = DEFAULT_IMAGE_TOKEN + texts[0]
        texts = [
            (DEFAULT_IMAGE_TOKEN + "\n" + t.replace(DEFAULT_IMAGE_TOKEN, "").strip()).strip()
            if DEFAULT_IMAGE_TOKEN in t
            else t
            for t in texts
        ]
    placeholders = sum(t.count(DEFAULT_IMAGE_TOKEN) for t in texts)
    if placeholders != (num_images if keep_images else 0):
        raise SkipSample(f"{placeholders} {DEFAULT_IMAGE_TOKEN} placeholders for {num_images} images")
    return [
        {"role": role, "content": from_llava(text)}
        for role, text in zip(roles, texts)
        if role  # no None: checked above
    ]


def tokenize_conversation(
    processor: EveProcessor,
    messages: list[dict[str, str]],
    images: list[ImageInput],
    mode: str = "train",
    max_size: int | None = None,
    spell_answers: bool = False,
) -> dict:
    """One training row: ids, modality flags and labels that supervise only the answers and turn ends.

    `messages` mark images with the processor's `image_token` (see `to_messages`). With `spell_answers`, the
    supervised text is tokenised one character per token (see `EveProcessor.spell`).
    """
    pixel_values = processor.image_processor(images, mode=mode, max_size=max_size) if images else []
    counts = iter([processor.count_image_tokens(p) for p in pixel_values])
    ids: list[int] = []
    flags: list[int] = []
    labels: list[int] = []
    for text, supervised in _merge_runs(processor.template.segments(messages, add_generation_prompt=False)):
        piece_counts = [next(counts) for _ in range(text.count(processor.image_token))]
        piece_ids, piece_flags = processor.tokenize_with_images(text, piece_counts, spell=supervised and spell_answers)
        ids += piece_ids
        flags += piece_flags
        labels += piece_ids if supervised else [IGNORE_INDEX] * len(piece_ids)
    if next(counts, None) is not None:
        raise ValueError(f"More images than {processor.image_token} placeholders in the conversation")
    return {"input_ids": ids, "mm_token_type_ids": flags, "labels": labels, "pixel_values": pixel_values}


def _merge_runs(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Joins neighbouring pieces with the same supervision, so text is split only where labels change and
    tokenises exactly as the same text does in an inference prompt."""
    merged: list[tuple[str, bool]] = []
    for text, supervised in segments:
        if merged and merged[-1][1] == supervised:
            merged[-1] = (merged[-1][0] + text, supervised)
        else:
            merged.append((text, supervised))
    return merged


def pad_rows(rows: list[dict[str, list[int]]], pad_token_id: int | None) -> dict[str, torch.Tensor]:
    """Right-pads `input_ids`, `mm_token_type_ids` and `labels` (with IGNORE_INDEX) to one length; adds
    `attention_mask`. The tokenizer's own `pad` knows neither labels nor modality flags."""
    length = max(len(row["input_ids"]) for row in rows)
    fill = {"input_ids": pad_token_id or 0, "mm_token_type_ids": 0, "labels": IGNORE_INDEX, "attention_mask": 0}
    batch: dict[str, list[list[int]]] = {key: [] for key in fill}
    for row in rows:
        row = {**row, "attention_mask": [1] * len(row["input_ids"])}
        for key, column in batch.items():
            column.append(list(row[key]) + [fill[key]] * (length - len(row[key])))
    return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


@dataclass
class Encoder:
    """Turns one conversation and its images into a training row for a stage.

    Attributes:
        processor: carries the stage's chat template.
        max_image_size: images are scaled down to an area of max_image_size**2; None drops images (text-only stage).
        max_length: longest row in tokens (image tokens included); None for no limit.
        spell_answers: supervise answers one character per token (see `EveProcessor.spell`).
        image_resize: "inference" rescales every image to the area as the chat does (a model fine-tuned on small
            screenshots then reads them in the chat); "train" is the official rule, which only shrinks large images.
    """

    processor: EveProcessor
    max_image_size: int | None
    max_length: int | None = None
    spell_answers: bool = False
    image_resize: str = "train"

    def __call__(self, conversations: list[dict], images: list) -> dict:
        keep_images = self.max_image_size is not None
        messages = to_messages(conversations, len(images), keep_images)
        if self.processor.template.name == "plain" and len(messages) != 2:
            raise SkipSample(f"the plain template takes one human and one gpt turn, got {len(messages)} turns")
        try:
            row = tokenize_conversation(
                self.processor,
                messages,
                images if keep_images else [],
                mode=self.image_resize,
                max_size=self.max_image_size,
                spell_answers=self.spell_answers,
            )
        except ValueError as error:  # unreadable image, too many pixels, ...
            raise SkipSample(str(error)) from error
        return self.truncate(row)

    def truncate(self, row: dict) -> dict:
        if self.max_length and len(row["input_ids"]) > self.max_length:
            if any(row["mm_token_type_ids"][self.max_length :]):
                raise SkipSample(f"{len(row['input_ids'])} tokens and --max-length {self.max_length} cuts an image")
            row.update({key: row[key][: self.max_length] for key in ROW_KEYS})
        if all(label == IGNORE_INDEX for label in row["labels"]):
            raise SkipSample("no answer token to supervise")
        return row


@dataclass
class Record:
    """One dataset item before loading: a sample dict or a per-sample JSON file, and where its files live."""

    item: dict | str
    json_folder: Path
    image_folder: Path

    def load(self) -> dict:
        if isinstance(self.item, dict):
            return self.item
        return json.loads((self.json_folder / self.item).read_text(encoding="utf-8"))

    def image_paths(self, sample: dict) -> list[Path]:
        images = sample.get("image") or []
        return [self.image_folder / name for name in ([images] if isinstance(images, str) else images)]


def load_records(paths: list[str | Path], image_folder: str | Path | None = None) -> list[Record]:
    """Items of every `--data` file (JSON list or JSONL), with their folders resolved."""
    records = []
    for path in map(Path, paths):
        text = path.read_text(encoding="utf-8")
        items = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if path.suffix == ".jsonl"
            else (json.loads(text))
        )
        if not isinstance(items, list):
            raise TypeError(f"{path} must hold a JSON list of samples or sample file names")
        folder = path.parent
        records += [Record(item, folder, Path(image_folder) if image_folder else folder) for item in items]
    return records


def split_records(records: list, eval_split: float, eval_samples: int, seed: int) -> tuple[list, list]:
    """A seeded held-out split: min(eval_split * n, eval_samples) records for evaluation, the rest for training."""
    n_eval = min(round(len(records) * eval_split), eval_samples) if eval_split > 0 else 0
    if n_eval >= len(records):
        raise ValueError(f"--eval-split leaves no training data ({len(records)} samples)")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:n_eval])
    train = [r for i, r in enumerate(records) if i not in held_out]
    return train, [records[i] for i in sorted(held_out)]


class LlavaDataset(Dataset):
    """Map-style dataset over LLaVA records; loads, tokenises and resizes in `__getitem__` (so in the workers)."""

    def __init__(self, records: list[Record], encoder: Encoder):
        if not records:
            raise ValueError("The dataset is empty")
        self.records = records
        self.encoder = encoder
        self.skipped = SkipCounter()

    def __len__(self) -> int:
        return len(self.records)

    def encode(self, index: int) -> dict:
        record = self.records[index]
        try:
            sample = record.load()
        except (OSError, ValueError) as error:
            raise SkipSample(f"cannot read {record.item}: {error}") from error
        return self.encoder(sample.get("conversations") or [], record.image_paths(sample))

    def __getitem__(self, index: int) -> dict:
        # A skipped sample is replaced by the next one, so batches keep their size and epochs their length.
        for offset in range(len(self.records)):
            position = (index + offset) % len(self.records)
            try:
                return self.encode(position)
            except SkipSample as reason:
                item = self.records[position].item
                self.skipped.note(item.get("id", position) if isinstance(item, dict) else item, str(reason))
        raise RuntimeError("Every sample of the dataset was skipped; see the warnings above")


class Collator:
    """Right-pads a list of rows into a batch and concatenates their images in order of appearance."""

    def __init__(self, processor: EveProcessor):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        batch: dict = pad_rows(
            [{key: row[key] for key in ROW_KEYS} for row in rows], self.processor.tokenizer.pad_token_id
        )
        batch["pixel_values"] = [pixels for row in rows for pixels in row["pixel_values"]]
        return batch


def worker_init(_: int) -> None:
    """Data-loader workers leave SIGINT/SIGTERM to the main process, which stops cleanly after the current step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)  # image resizing and tokenising are single-threaded; leave the cores to the model
