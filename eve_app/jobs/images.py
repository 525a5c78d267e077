"""Image references of a dataset: where each file is, whether it opens, and how many tokens it costs the model.

PIL reads only the header and checks the data (`verify`), so thousands of images validate in seconds; each file is
checked once however many rows use it. The token count follows the training resize rule of the model's image
processor (scale down to an area of `max_size**2`, sides rounded to the patch size, never scaled up).
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image

from model.shared import (
    DEFAULT_DENSE_STRIDE,
    DEFAULT_IMAGE_MAX_SIZE,
    DEFAULT_PATCH_STRIDE,
    num_image_tokens,
    resized_size,
    stage_image_max_size,
    stage_presets,
)

from ..storage.images import ACCEPTED_NAMES, PIL_FORMATS


@dataclass(frozen=True)
class ImageSettings:
    """How images are sized for training: `max_size` None means the stage drops images (text warm-up)."""

    max_size: int | None = DEFAULT_IMAGE_MAX_SIZE
    patch_size: int = DEFAULT_PATCH_STRIDE * DEFAULT_DENSE_STRIDE

    @classmethod
    def for_job(
        cls, base: str | Path | None = None, stage: str = "3", max_image_size: int | None = None
    ) -> "ImageSettings":
        """The sizes a job will use: the base checkpoint's config.json, the stage's low/high rule, the override."""
        config = {}
        if base is not None and (Path(base) / "config.json").is_file():
            config = json.loads((Path(base) / "config.json").read_text())
        full = int(config.get("image_max_size", DEFAULT_IMAGE_MAX_SIZE))
        patch = int(config.get("patch_stride", DEFAULT_PATCH_STRIDE)) * int(
            config.get("dense_stride", DEFAULT_DENSE_STRIDE)
        )
        rule = stage_presets().get(stage, {}).get("image_size", "high")
        return cls(stage_image_max_size(rule, full, max_image_size), patch)

    def tokens(self, width: int, height: int) -> int:
        """Tokens of one image as the trainer will resize it (0 when the stage drops images)."""
        if self.max_size is None:
            return 0
        new_width, new_height = resized_size(width, height, self.patch_size, self.max_size, mode="train")
        return num_image_tokens(new_height, new_width, self.patch_size)


class ImageFinder:
    """Resolves image references under `root` and checks each file once.

    Args:
        root: the folder relative image paths start from.
        search_root: nothing outside it is opened; with `by_name`, a reference whose path is not found may match a
            uploaded file of the same name anywhere under it (loose image uploads lose their folders).
        max_pixels: larger images are refused (the model's image processor refuses them too).
    """

    def __init__(self, root: Path, search_root: Path, max_pixels: int, by_name: bool = False):
        self.root, self.search_root = root.resolve(), search_root.resolve()
        self.max_pixels, self.by_name = max_pixels, by_name
        self._names: dict[str, list[Path]] | None = None
        self._checked: dict[Path, tuple[tuple[int, int] | None, str | None]] = {}

    def _index(self) -> dict[str, list[Path]]:
        if self._names is None:
            self._names = {}
            for path in self.search_root.rglob("*"):
                if path.is_file():
                    self._names.setdefault(path.name, []).append(path)
        return self._names

    def resolve(self, ref: str) -> tuple[Path | None, str | None, str | None]:
        """(path, problem, note) for one reference; path is None when the file cannot be used."""
        posix = ref.replace("\\", "/")
        if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in PurePosixPath(posix).parts:
            return None, f"image {ref!r} must be a relative path inside the dataset folder", None
        path = (self.root / posix).resolve()
        if not path.is_relative_to(self.search_root):
            return None, f"image {ref!r} points outside the dataset folder", None
        if path.is_file():
            return path, None, None
        matches = self._index().get(PurePosixPath(posix).name, []) if self.by_name else []
        if len(matches) == 1:
            found = matches[0].relative_to(self.search_root).as_posix()
            return matches[0], None, f"image {ref!r} is not at that path; using the uploaded file {found}"
        if len(matches) > 1:
            return None, f"image {ref!r} is missing at that path and {len(matches)} uploaded files have its name", None
        where = path.relative_to(self.search_root).as_posix()
        return None, f"image {ref!r} is missing (looked for {where} in the upload)", None

    def check(self, path: Path, ref: str) -> tuple[tuple[int, int] | None, str | None]:
        """((width, height), None) for a usable image, else (None, problem)."""
        if path not in self._checked:
            self._checked[path] = self._open(path, ref)
        return self._checked[path]

    def _open(self, path: Path, ref: str) -> tuple[tuple[int, int] | None, str | None]:
        if path.stat().st_size == 0:
            return None, f"image {ref!r} is empty (0 bytes)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is the policy
                with Image.open(path, formats=list(PIL_FORMATS.values())) as img:
                    size = img.size
                    if size[0] * size[1] > self.max_pixels:
                        return None, (
                            f"image {ref!r} is {size[0]}x{size[1]} pixels, above the limit of "
                            f"{self.max_pixels / 1e6:.0f} megapixels"
                        )
                    img.verify()  # checks the data without decoding every pixel
        except Image.DecompressionBombError:
            return None, f"image {ref!r} claims an absurd size; refused"
        except Image.UnidentifiedImageError:
            return None, f"image {ref!r} is not an accepted image ({ACCEPTED_NAMES})"
        except Exception as error:  # noqa: BLE001 -- PIL raises many types for bad data (OSError, SyntaxError, ...)
            return None, f"image {ref!r} does not open as an image: {error}"
        if min(size) < 1:
            return None, f"image {ref!r} has no pixels ({size[0]}x{size[1]})"
        return size, None

    def unique_files(self) -> int:
        """Distinct usable image files seen so far."""
        return sum(1 for size, problem in self._checked.values() if problem is None)
