"""What the benchmarks of the app's request path share: test images, and the engine's own time to first token of
each `/answer` call as the app stored it."""

from pathlib import Path

import numpy as np
from PIL import Image


def random_images(folder: Path, count: int, size: tuple[int, int] = (160, 120), seed: int = 0) -> list[str]:
    """`count` PNG files of random pixels (each one different, so each is stored anew)."""
    paths = []
    for i in range(count):
        path = folder / f"image-{seed + i}.png"
        pixels = np.random.default_rng(seed + i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def stored_ttfts(storage) -> list[float]:
    """Engine TTFTs of the /answer calls, oldest first, from the stored generation records."""
    rows = []
    for summary in storage.list_conversations(owner="admin", limit=1000):
        for message in storage.get_conversation(summary["id"])["messages"]:
            if message["role"] == "assistant" and message["generation"]:
                rows.append((message["generation"]["created_at"], message["generation"]["time_to_first_token"]))
    return [ttft for _, ttft in sorted(rows)]
