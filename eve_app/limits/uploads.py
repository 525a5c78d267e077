"""Upper bounds for one fine-tuning upload (`UploadLimits`), and sizes as the refusals write them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class UploadLimits:
    """Upper bounds for one upload, so a hostile or mistaken upload cannot fill the disk or the memory."""

    max_archive_bytes: int = 1 << 30
    max_total_bytes: int = 4 << 30  # unpacked size of everything uploaded
    max_files: int = 20_000
    max_json_bytes: int = 64 << 20  # parsing takes several times this in memory
    max_image_pixels: int = 40_000_000
    max_compression_ratio: float = 100.0  # zip bombs pack gigabytes of zeros into kilobytes
    max_rows: int = 100_000


def human_size(n: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
