"""Image preprocessing for EVEv2: load any image as RGB, resize to a patch grid, normalise with CLIP statistics.

EVEv2 has no vision encoder with a fixed input size; the patch embedding layer takes any image whose sides are
multiples of the patch size P (patch_stride * dense_stride = 32 for the official model). Two resize rules exist,
and both are kept because the released weights saw both:

- inference (official ``process_images``, used by every eval script) always rescales, up or down, to an area of
  about ``max_size**2`` and rounds each side UP to a multiple of P, so every image costs about the same number of
  tokens (~2500 patches at max_size 1600) no matter how small it was;
- train (official dataset loader) only scales DOWN images larger than ``max_size**2`` and rounds each side to the
  NEAREST multiple of P, so small images stay small and cheap during training.

After resizing the image is divided by 255, normalised with the CLIP mean/std and returned as a [3, H, W] float32
tensor. The resize is done here (the official code does it before a ``CLIPImageProcessor`` with resizing off).
"""

import os
import warnings
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image, ImageOps
from transformers.image_processing_utils import BaseImageProcessor
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .shared import (
    DEFAULT_DENSE_STRIDE,
    DEFAULT_IMAGE_MAX_SIZE,
    DEFAULT_PATCH_STRIDE,
    num_image_tokens,
    resized_size,
)

# OpenAI CLIP's normalisation, which the official EVEv2 image processor uses too.
CLIP_MEAN = tuple(OPENAI_CLIP_MEAN)
CLIP_STD = tuple(OPENAI_CLIP_STD)

ImageInput = Image.Image | str | os.PathLike


def _to_uint8(array: np.ndarray, high_bit_depth: bool) -> np.ndarray:
    """Map a one-channel integer or float array to 0..255 without clipping bright 16/32-bit images to white."""
    array = array.astype(np.float64)
    peak = float(array.max()) if array.size else 0.0
    if peak > 255:
        # 16-bit data keeps its absolute brightness (/256); anything wider is stretched by its maximum.
        array = array / 256 if high_bit_depth and peak <= 65535 else array * (255 / peak)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparent pixels become white instead of PIL's default black."""
    if img.mode.startswith("I") or img.mode == "F":
        # PIL's own convert clips these to 0..255, which turns 16-bit images white.
        gray = _to_uint8(np.asarray(img), high_bit_depth=img.mode != "F")
        return Image.fromarray(gray).convert("RGB")  # uint8 (H, W) -> mode "L"
    if img.mode == "La":  # premultiplied alpha; PIL cannot go from La to RGBA directly
        img = img.convert("LA")
    if img.has_transparency_data:
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


class EveImagesKwargs(TypedDict, total=False):
    """The settings `EveImageProcessor.from_pretrained(..., **overrides)` accepts (transformers reads this type)."""

    max_size: int
    patch_stride: int
    dense_stride: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    max_image_pixels: int


class EveImageProcessor(BaseImageProcessor):
    """Turns images into normalised pixel tensors whose sides are multiples of the EVE patch size.

    A transformers image processor, so `save_pretrained` writes `preprocessor_config.json` and `AutoImageProcessor` (and
    `EveProcessor.from_pretrained`) read it back.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = EveImagesKwargs  # type: ignore[assignment]  # transformers reads only its keys

    def __init__(
        self,
        max_size: int = DEFAULT_IMAGE_MAX_SIZE,
        patch_stride: int = DEFAULT_PATCH_STRIDE,
        dense_stride: int = DEFAULT_DENSE_STRIDE,
        image_mean: tuple[float, ...] | list[float] = CLIP_MEAN,
        image_std: tuple[float, ...] | list[float] = CLIP_STD,
        max_image_pixels: int = 64_000_000,
        **kwargs: Any,
    ):
        kwargs.pop("image_processor_type", None)  # written by `to_dict`, names this class
        super().__init__(**kwargs)
        self.max_size = max_size
        self.patch_stride = patch_stride
        self.dense_stride = dense_stride
        self.image_mean = tuple(float(m) for m in image_mean)
        self.image_std = tuple(float(s) for s in image_std)
        # Guards against decompression bombs; checked from the header, before any pixel is decoded.
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_config(cls, config: Any) -> "EveImageProcessor":
        """Build the processor from an EVE model config, the single source of sizes."""
        return cls(
            max_size=config.image_max_size,
            patch_stride=config.patch_stride,
            dense_stride=config.dense_stride,
            image_mean=config.image_mean,
            image_std=config.image_std,
        )

    @property
    def patch_size(self) -> int:
        """Pixels per side of one image token: conv patch stride times the dense (merge) stride."""
        return self.patch_stride * self.dense_stride

    def target_size(
        self, width: int, height: int, mode: str = "inference", max_size: int | None = None
    ) -> tuple[int, int]:
        """(new_width, new_height) by the official rule; mode "inference" or "train" (see the module docstring)."""
        return resized_size(width, height, self.patch_size, max_size or self.max_size, mode)

    def load_image(self, image: ImageInput) -> Image.Image:
        """Open (if a path), size-check, fully decode, apply EXIF orientation and convert to RGB.

        Raises:
            ValueError: the file cannot be read or decoded, or the image has more than ``max_image_pixels`` pixels.
        """
        if isinstance(image, Image.Image):
            # The caller's image: read, never modified (EXIF orientation goes to a copy).
            return self._decode(image, getattr(image, "filename", "") or "image", owned=False)
        name = os.fspath(image)
        try:
            with warnings.catch_warnings():
                # Our own limit is the policy; PIL still raises DecompressionBombError far above its default.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(image)
        except Exception as err:  # missing, empty, non-image file, or a header claiming an absurd size
            raise ValueError(f"{name} is not a readable image: {err}") from err
        with opened:
            return self._decode(opened, name, owned=True)

    def _decode(self, img: Image.Image, name: str, owned: bool) -> Image.Image:
        """Check the header size before decoding any pixel, then decode fully so bad data fails here.

        `owned`: the image was opened here, so EXIF orientation may be applied in place (a large image is not copied
        for nothing); a caller's image is transposed into a new one and left as it was.
        """
        width, height = img.size
        if width * height > self.max_image_pixels:
            raise ValueError(
                f"{name} is not a readable image: {width}x{height} pixels exceeds the limit of "
                f"{self.max_image_pixels} pixels"
            )
        try:
            img.load()  # truncated files fail here, not later in resize or the model
            if owned:
                ImageOps.exif_transpose(img, in_place=True)
            else:
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
        except Exception as err:  # PIL raises OSError, SyntaxError, EOFError, struct.error, ... for bad data
            raise ValueError(f"{name} is not a readable image: {err}") from err

    def preprocess(self, image: ImageInput, mode: str = "inference", max_size: int | None = None) -> torch.Tensor:
        """One image -> [3, H, W] float32 tensor with H and W multiples of ``patch_size``."""
        img = self.load_image(image)
        size = self.target_size(*img.size, mode=mode, max_size=max_size)
        if img.size != size:
            img = img.resize(size, Image.Resampling.BICUBIC)
        mean, std = (
            torch.tensor(values, dtype=torch.float32).view(3, 1, 1) for values in (self.image_mean, self.image_std)
        )
        # (H, W, 3) bytes -> (3, H, W) floats in one copy, normalised in place: the float32 operations of
        # (x / 255 - mean) / std, bit for bit, in 12 ms instead of 38 (NumPy) for a 1856x1408 image.
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
        pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
        return pixels.div_(255.0).sub_(mean).div_(std)

    def __call__(  # type: ignore[override]  # a list of differently sized tensors, not a padded BatchFeature
        self, images: list[ImageInput], mode: str = "inference", max_size: int | None = None
    ) -> list[torch.Tensor]:
        """Preprocess each image separately; sizes differ, so the result is a list, not a batch."""
        return [self.preprocess(image, mode=mode, max_size=max_size) for image in images]

    def num_image_tokens(self, height: int, width: int) -> int:
        """Tokens for a preprocessed [3, H, W] tensor: one class token plus h rows of w patches and a row split."""
        return num_image_tokens(height, width, self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain settings (what `preprocessor_config.json` holds), and the class name `AutoImageProcessor` reads."""
        return {
            "max_size": self.max_size,
            "patch_stride": self.patch_stride,
            "dense_stride": self.dense_stride,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "max_image_pixels": self.max_image_pixels,
            "image_processor_type": type(self).__name__,
        }
