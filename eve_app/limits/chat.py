"""What one visitor may send: bytes and pixels per image, images per message, question length, and the check that
enforces them before an image is stored or decoded.

Every limit is a flag (see `settings.py`). An image is checked in order of cost: its file size, its magic bytes
against the one format allow-list (`storage.images.FORMATS`), its header (pixels, and whether the file is far larger
than such an image can be), and only then a full decode, which runs inside a bounded pool so that a burst of uploads
cannot take more memory than `max_concurrent_decodes` images at once.
"""

import ctypes
import ctypes.util
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import UserError
from ..storage.images import ACCEPTED_NAMES, PIL_FORMATS, sniff_format
from .uploads import human_size

# A file may be bigger than its raw pixels (8 bytes a pixel covers 16-bit RGBA TIFF) by this much: metadata, ICC
# profiles, thumbnails. Past that, the bytes are something else appended to an image.
METADATA_SLACK = 1 << 20


@dataclass(frozen=True)
class ChatLimits:
    max_image_bytes: int = 20 << 20
    max_image_pixels: int = 40_000_000
    max_images_per_message: int = 4
    max_question_chars: int = 4000
    max_concurrent_decodes: int = 2
    decode_wait_seconds: float = 30.0


def decode_pixels(path: str, ext: str) -> None:
    """Decode every pixel once (truncated or corrupt data fails here), in the file's own mode: one copy of the
    image in memory, no conversions."""
    with Image.open(path, formats=[PIL_FORMATS[ext]]) as image:
        image.load()


class ImageGate:
    """Checks uploaded images against `ChatLimits`; `decode(path, ext)` decodes one fully, at most
    `max_concurrent_decodes` at a time."""

    def __init__(self, limits: ChatLimits, decode: Callable[[str, str], None] = decode_pixels):
        self.limits, self.decode = limits, decode
        self._slots = threading.BoundedSemaphore(limits.max_concurrent_decodes)

    def check_message(self, text: str, paths: list[str]) -> None:
        """Raises UserError for a message that breaks a limit, naming the limit."""
        limits = self.limits
        if len(text) > limits.max_question_chars:
            raise UserError(f"The question is {len(text)} characters long; the limit is {limits.max_question_chars}.")
        if len(paths) > limits.max_images_per_message:
            raise UserError(f"{len(paths)} images in one message; the limit is {limits.max_images_per_message}.")
        for path in paths:
            self.check_image(path)

    def check_image(self, path: str | Path) -> None:
        path = Path(path)
        name, limits = path.name, self.limits
        try:
            size = path.stat().st_size
            with path.open("rb") as handle:
                head = handle.read(32)
        except OSError as error:
            raise UserError(f"{name} was not uploaded completely; send it again.") from error
        if size == 0:
            raise UserError(f"{name} is empty (0 bytes).")
        if size > limits.max_image_bytes:
            raise UserError(
                f"{name} is {human_size(size)}; the limit is {human_size(limits.max_image_bytes)} an image."
            )
        ext = sniff_format(head)
        if ext is None:
            raise UserError(f"{name} is not an accepted image: send a {ACCEPTED_NAMES} file.")
        width, height = self._header_size(path, ext)
        if width * height > limits.max_image_pixels:
            raise UserError(
                f"{name} is {width}x{height} pixels; the limit is {limits.max_image_pixels / 1e6:g} megapixels."
            )
        if size > 8 * width * height + METADATA_SLACK:
            raise UserError(
                f"{name} is {human_size(size)}, far more than a {width}x{height} image needs; refused "
                "(is something appended to the image?)."
            )
        if not self._slots.acquire(timeout=limits.decode_wait_seconds):
            raise UserError("The server is busy reading other images; send yours again in a moment.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self.decode(str(path), ext)
        except Exception as error:
            raise UserError(f"{name} could not be decoded as an image ({_reason(error)}).") from error
        finally:
            self._slots.release()

    @staticmethod
    def _header_size(path: Path, ext: str) -> tuple[int, int]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our pixel limit is the policy
                with Image.open(path, formats=[PIL_FORMATS[ext]]) as image:
                    return image.size
        except Exception as error:
            raise UserError(f"{path.name} looks like {ext.upper()} but its header is broken.") from error


def _reason(error: Exception) -> str:
    """The decoder's reason without the server path it may name."""
    text = str(error)
    return text.split(": ", 1)[1] if ": " in text else text


def cap_allocator_arenas(arenas: int = 2) -> bool:
    """Let glibc's malloc keep at most `arenas` memory pools (its default is 8 per core).

    Each Gradio worker thread that decodes a large image otherwise gets a pool of its own and keeps the freed pixels
    in it: a burst of 8 uploads of 36-megapixel images measured 1.4 GB of peak growth with the default pools and
    0.6 GB with two (one such image alone: 0.4 GB). Same effect as MALLOC_ARENA_MAX=2; a no-op off glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(-8, arenas))  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):
        return False
