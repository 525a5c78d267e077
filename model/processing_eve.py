"""EVEv2 processor: chat template, tokenisation with image tokens, and image preprocessing in one object.

A transformers `ProcessorMixin` shaped like `Qwen2VLProcessor`, so `AutoProcessor.from_pretrained(folder)` loads it
once `model` classes are imported (`model.auto` registers them), `save_pretrained` writes `processor_config.json`
(template, image token id and image settings), `chat_template.jinja` and the tokenizer, and `apply_chat_template`
renders the official prompt from messages with image content blocks. Official checkpoints have none of those files:
their processor is built from config.json and the tokenizer (and a saved `eve_processor.json`, which older runs of
this project wrote). vLLM reads the same chat template through `AutoProcessor` (see `model/vllm`).

Each image is one vocabulary token in the text, `image_token` (`<|image_pad|>`), expanded to the image's token count
(`1 + h * (w + 1)`) before the tokenizer runs; the tokenizer splits text around that special token, so each text
chunk is tokenised on its own, as the official `tokenizer_image_token` does around `<image>`. Image positions then
carry `config.image_token_id` (0 in the official checkpoint, which writes 0 there too) and `mm_token_type_ids == 1`.
`<image>` is the LLaVA data format, not this processor's: the training data code translates it where it reads data
(`model/train/data.py`), and supervises answers there.
"""

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BatchFeature, PreTrainedTokenizerBase, ProcessorMixin
from transformers.processing_utils import MultiModalData
from transformers.utils import PROCESSOR_NAME, cached_file

from .chat_template import ChatTemplate, Message, get_template
from .configuration_eve import EveConfig
from .image_processing_eve import EveImageProcessor, ImageInput
from .shared import IMAGE_TOKEN

# Written by this project before the processor was a ProcessorMixin: {"template": name}. Still read, never written.
LEGACY_PROCESSOR_FILE = "eve_processor.json"
# Arguments of `from_pretrained` that locate files (local folder, Hub, cache); the rest configure the processor.
HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


class EveProcessor(ProcessorMixin):
    """Builds prompts and model inputs; `processor(text=prompt, images=[...])` gives what `model(**inputs)` takes.

    Args:
        tokenizer: the checkpoint's tokenizer.
        image_processor: resizes and normalises images (sizes from the model config).
        template: name of the chat format (`model.chat_template.TEMPLATES`: "qwen2" for chat, "plain" for the
            pre-training stages); it also gives `chat_template` when none is passed.
        image_token_id: id written at image positions of `input_ids` (the config's `image_token_id`); the text
            marks them with the vocabulary token `image_token` (`<|image_pad|>`).
        chat_template: Jinja template for `apply_chat_template`; default: `template`'s, rendered in Jinja.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: EveImageProcessor,
        template: str = "qwen2",
        image_token_id: int = 0,
        chat_template: str | None = None,
        whole_words: Sequence[str] = (),
        **kwargs: Any,
    ):
        self.template: ChatTemplate = get_template(template)
        self.image_token = IMAGE_TOKEN
        self.image_token_id = image_token_id
        # Closed-vocabulary words (colours, shapes, positions, field names, ...) that `spell` keeps as one token.
        self.whole_words = tuple(sorted(set(whole_words), key=lambda w: (-len(w), w)))
        self._whole_pattern = (
            re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, self.whole_words)) + r")(?![A-Za-z0-9_])")
            if self.whole_words
            else None
        )
        self._vocab: dict[str, int] | None = None
        super().__init__(tokenizer, image_processor, chat_template=chat_template or self.template.to_jinja(), **kwargs)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike, config: EveConfig | None = None, **kwargs: Any
    ) -> "EveProcessor":
        """A saved processor as transformers loads it; for a checkpoint without `processor_config.json` (official
        or older), the tokenizer files plus image settings from the model config (`config`, else config.json)."""
        path = str(pretrained_model_name_or_path)
        hub = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
        if _checkpoint_file(path, PROCESSOR_NAME, hub) is not None:
            from . import auto  # noqa: F401  (the sub-processors resolve through AutoImageProcessor)

            return super().from_pretrained(path, **kwargs)
        config = config if config is not None else EveConfig.from_pretrained(path, **hub)
        legacy_file = _checkpoint_file(path, LEGACY_PROCESSOR_FILE, hub)
        settings = json.loads(Path(legacy_file).read_text()) if legacy_file else {}
        tokenizer = AutoTokenizer.from_pretrained(path, config=config, **hub)  # config: no `eve-qwen2` warning
        image_processor = EveImageProcessor.from_config(config)
        return cls(tokenizer, image_processor, image_token_id=config.image_token_id, **settings)

    def to_dict(self) -> dict[str, Any]:
        """What `processor_config.json` holds: the template by name, not the object."""
        output = super().to_dict()
        output["template"] = self.template.name
        output["whole_words"] = list(self.whole_words)
        for private in [key for key in output if key.startswith("_")]:
            del output[private]
        return output

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an answer: the turn end `<|im_end|>` and `<|endoftext|>`, where the vocabulary has them."""
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        return [i for i in ids if i is not None and i != self.tokenizer.unk_token_id]

    def build_prompt(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """Prompt text for `messages` ([{"role": "user"|"assistant", "content": str}]) in the model's chat format."""
        return self.template.render(messages, add_generation_prompt)

    def count_image_tokens(self, pixel_values: torch.Tensor) -> int:
        """Tokens one preprocessed image ([3, H, W]) takes in the prompt."""
        return self.image_processor.num_image_tokens(pixel_values.shape[-2], pixel_values.shape[-1])

    def _get_num_multimodal_tokens(self, image_sizes: list[list[int]] | None = None, **kwargs: Any) -> MultiModalData:
        """Prompt tokens of images of the given (height, width) before resizing (transformers' and vLLM's hook)."""
        if image_sizes is None:
            return MultiModalData()
        tokens = []
        for height, width in image_sizes:
            new_width, new_height = self.image_processor.target_size(width, height, max_size=kwargs.get("max_size"))
            tokens.append(self.image_processor.num_image_tokens(new_height, new_width))
        return MultiModalData(num_image_tokens=tokens, num_image_patches=[1] * len(tokens))

    def tokenize_with_images(
        self, text: str, image_token_counts: list[int], spell: bool = False
    ) -> tuple[list[int], list[int]]:
        """Token ids and modality flags of `text`, each `image_token` expanded to its image's token count.

        The training rows' tokenisation (`model/train/data.py`), which may `spell` the text one symbol per token.
        """
        chunks = text.split(self.image_token)
        if len(chunks) - 1 != len(image_token_counts):
            raise ValueError(
                f"The text has {len(chunks) - 1} {self.image_token} placeholders but {len(image_token_counts)} "
                "images were given; give one image per placeholder"
            )
        ids: list[int] = []
        flags: list[int] = []
        for i, chunk in enumerate(chunks):
            if chunk:
                chunk_ids = (
                    self.spell(chunk) if spell else self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
                )
                ids += chunk_ids
                flags += [0] * len(chunk_ids)
            if i < len(image_token_counts):
                ids += [self.image_token_id] * image_token_counts[i]
                flags += [1] * image_token_counts[i]
        return ids, flags

    def __call__(
        self,
        text: str | list[str],
        images: list[ImageInput] | list[list[ImageInput]] | None = None,
        padding_side: str = "left",
        max_size: int | None = None,
        return_tensors: str = "pt",
        videos: None = None,
        audio: None = None,
    ) -> BatchFeature:
        """Model inputs for one prompt or a batch of prompts.

        `images` lists the images in the order of the `image_token` placeholders (for a batch: a flat list over all
        prompts, or one list per prompt). Returns `input_ids`, `attention_mask`, `mm_token_type_ids` ([B, L]) and
        `pixel_values` (a list with one [3, H, W] tensor per image). Batches are padded on the left by default,
        which is what generation needs. `videos` and `audio` exist because `apply_chat_template(..., tokenize=True)`
        passes them; EVEv2 reads neither.
        """
        if videos is not None or audio is not None:
            raise ValueError("EVEv2 takes text and images only, not videos or audio")
        texts = [text] if isinstance(text, str) else list(text)
        flat_images = _flatten_images(images)
        pixel_values = self.image_processor(flat_images, max_size=max_size) if flat_images else []
        counts = iter([self.count_image_tokens(p) for p in pixel_values])
        placeholders = sum(prompt.count(self.image_token) for prompt in texts)
        if placeholders != len(pixel_values):
            raise ValueError(
                f"{len(pixel_values)} images were given for {placeholders} {self.image_token} placeholders; give one "
                "image per placeholder"
            )
        # Each image token becomes as many copies as the image has tokens (as Qwen2VLProcessor expands its own).
        expanded = []
        for prompt in texts:
            first, *rest = prompt.split(self.image_token)
            expanded.append(first + "".join(self.image_token * next(counts) + part for part in rest))
        features = self.tokenizer(
            expanded, add_special_tokens=False, padding=True, padding_side=padding_side, return_tensors=return_tensors
        )
        vocabulary_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        is_image = (features["input_ids"] == vocabulary_id) & features["attention_mask"].bool()
        features["input_ids"] = features["input_ids"].masked_fill(is_image, self.image_token_id)
        features["mm_token_type_ids"] = is_image.long()
        return BatchFeature({**features, "pixel_values": pixel_values})

    def spell(self, text: str) -> list[int]:
        """Ids of `text` one symbol per token: each BPE piece split back into the symbols it was merged from.

        Special tokens stay whole, and so does a piece whose symbols are not all in the vocabulary. With a byte-level
        vocabulary every character is one symbol, so a model trained on spelled answers emits text that decodes
        exactly as its BPE form would, and a small model learning to read lines each output token up with one glyph.

        Words of `whole_words` standing alone (not inside a longer word) stay one token, with the space before them,
        when the vocabulary has that token: a closed vocabulary (colours, shapes, link names) is then named in one
        step instead of being spelled.
        """
        if self._whole_pattern is None:
            return self._spell_symbols(text)
        if self._vocab is None:
            self._vocab = self.tokenizer.get_vocab()
        vocab = self._vocab
        ids: list[int] = []
        start = 0
        for match in self._whole_pattern.finditer(text):
            word, begin = match.group(1), match.start()
            spaced = begin > 0 and text[begin - 1] == " "
            token_id = vocab.get(("\u0120" if spaced else "") + word)
            if token_id is None:
                continue  # not one token in this vocabulary: spelled with the text around it
            ids += self._spell_symbols(text[start : begin - 1 if spaced else begin])
            ids.append(token_id)
            start = match.end()
        return ids + self._spell_symbols(text[start:])

    def _spell_symbols(self, text: str) -> list[int]:
        if not text:
            return []
        specials = set(self.tokenizer.all_special_ids)
        unknown = {None, self.tokenizer.unk_token_id}
        ids: list[int] = []
        for token_id in self.tokenizer(text, add_special_tokens=False)["input_ids"]:
            symbols = self.tokenizer.convert_tokens_to_ids(list(self.tokenizer.convert_ids_to_tokens(token_id)))
            whole = token_id in specials or len(symbols) == 1 or any(i in unknown for i in symbols)
            ids += [token_id] if whole else symbols
        return ids


def _flatten_images(images: list[ImageInput] | list[list[ImageInput]] | None) -> list[ImageInput]:
    if not images:
        return []
    flat: list[ImageInput] = []
    for item in images:
        flat.extend(item if isinstance(item, (list, tuple)) else [item])
    return flat


def saved_settings(folder: str | Path) -> dict[str, Any]:
    """The processor settings saved in a local folder: `processor_config.json`, else the older `eve_processor.json`
    (training stages read their `whole_words` from the folder they start from)."""
    for name in (PROCESSOR_NAME, LEGACY_PROCESSOR_FILE):
        file = Path(folder) / name
        if file.is_file():
            return json.loads(file.read_text())
    return {}


def _checkpoint_file(path: str, name: str, hub_kwargs: dict[str, Any]) -> str | None:
    """The local path of `name` in a checkpoint folder or Hub repo (downloaded or cached), or None if it has none."""
    return cached_file(
        path,
        name,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )
