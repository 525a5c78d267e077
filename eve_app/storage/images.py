"""Image files on disk, addressed by content: `<data_dir>/images/<aa>/<sha256>.<ext>`.

The UI hands over the uploaded bytes; identical bytes always map to the same file, so an image sent in many
messages (or many conversations) is written once. The format is read from the magic bytes (the file name may lie or
be missing) and the size from the header, with no imaging library: storage must not depend on PIL.
"""

import hashlib
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The one allow-list of image formats, for the upload check and for storage: extension -> mime type. Everything else
# (EPS, PDF, ICO, JPEG 2000, ...) is refused before any decoder sees it.
FORMATS = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}
# The Pillow decoder allowed to open each format (`Image.open(..., formats=[...])`).
PIL_FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "webp": "WEBP", "bmp": "BMP", "tiff": "TIFF"}
ACCEPTED_NAMES = "PNG, JPEG, GIF (first frame), WebP, BMP or TIFF"
_ALIASES = {"jpeg": "jpg", "jpe": "jpg", "jfif": "jpg", "tif": "tiff"}


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    ext: str
    mime: str
    size: int
    width: int | None
    height: int | None

    @property
    def relative_path(self) -> str:
        """Where the file lives under the data dir (POSIX separators, so the value is portable)."""
        return f"images/{self.sha256[:2]}/{self.sha256}.{self.ext}"


def sniff_format(data: bytes) -> str | None:
    """The extension matching the magic bytes, or None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def image_format(data: bytes, filename_hint: str = "") -> str:
    """The file extension to store `data` under: the magic bytes first, else the hint's extension.

    Raises:
        ValueError: neither the content nor the name is one of png, jpg, gif, webp, bmp.
    """
    ext = sniff_format(data)
    if ext is None:
        hinted = Path(filename_hint).suffix.lower().lstrip(".")
        ext = _ALIASES.get(hinted, hinted)
    if ext not in FORMATS:
        raise ValueError(f"{filename_hint or 'the file'} is not an accepted image: send a {ACCEPTED_NAMES} file")
    return ext


def image_size(data: bytes, ext: str) -> tuple[int | None, int | None]:
    """(width, height) read from the header, or (None, None) when the header is not understood."""
    try:
        if ext == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if ext == "gif":
            return struct.unpack("<HH", data[6:10])
        if ext == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return width, abs(height)  # negative height: rows stored top-down
        if ext == "jpg":
            return _jpeg_size(data)
        if ext == "webp":
            return _webp_size(data)
    except struct.error:
        pass
    return None, None


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    """Walk the JPEG segments to the first start-of-frame marker, which holds the size."""
    offset = 2
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None, None
        marker = data[offset + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # stand-alone markers carry no length
            offset += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            height, width = struct.unpack(">HH", data[offset + 5 : offset + 9])
            return width, height
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None, None


def describe(data: bytes, filename_hint: str = "") -> ImageInfo:
    """Hash, format and size of an image given as bytes (raises ValueError for unsupported formats)."""
    ext = image_format(data, filename_hint)
    width, height = image_size(data, ext)
    return ImageInfo(hashlib.sha256(data).hexdigest(), ext, FORMATS[ext], len(data), width, height)


def write_once(data_dir: Path, info: ImageInfo, data: bytes) -> Path:
    """Write the file unless it is already there; a temporary file and a rename keep readers from half a file."""
    path = data_dir / info.relative_path
    if path.is_file() and path.stat().st_size == info.size:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
