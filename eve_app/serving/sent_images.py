"""Images a vLLM backend has already handed to vLLM, so that later turns send only their ids.

vLLM keys its processor cache (each image resized and normalised) and its prefix cache by one id per image. Given
the file's content digest as that id (`multi_modal_uuids` in-process, an `image_url` part's `uuid` on the server),
vLLM does not hash the pixels, and an image it already holds can go without them: a follow-up turn about earlier
images neither decodes, uploads nor hashes them again. What is recorded here is a hint, not a promise: vLLM's cache
may have evicted the image since (or the server restarted), and then vLLM refuses the request before it starts; the
backend sends it once more with every image (`retry.with_one_retry`).
"""

import hashlib
import os
import threading
from collections import OrderedDict


class SentImages:
    """Content digests of image files, and which (digest, image size) vLLM was sent with pixels; both LRU-bounded."""

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._digests: OrderedDict[tuple[str, int, int], str] = OrderedDict()  # (path, mtime_ns, bytes) -> sha256
        self._sent: OrderedDict[tuple[str, int | None], tuple[int, int]] = OrderedDict()  # -> decoded (w, h)
        self._lock = threading.Lock()

    def digest(self, path: str) -> str:
        """The SHA-256 of the file's bytes, read once per file version; raises OSError for a missing file."""
        stat = os.stat(path)
        key = (os.fspath(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._digests:
                self._digests.move_to_end(key)
                return self._digests[key]
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        with self._lock:
            self._put(self._digests, key, digest)
        return digest

    def size(self, digest: str, max_size: int | None) -> tuple[int, int] | None:
        """The decoded (width, height) of an image vLLM was sent at this image size, or None if it was not."""
        with self._lock:
            size = self._sent.get((digest, max_size))
            if size is not None:
                self._sent.move_to_end((digest, max_size))
            return size

    def remember(self, digest: str, max_size: int | None, size: tuple[int, int]) -> None:
        with self._lock:
            self._put(self._sent, (digest, max_size), size)

    def remember_sent(self, images: list, image_ids: list[str], max_size: int | None) -> None:
        """Records the images of a request vLLM accepted that went with their pixels (None: went by id)."""
        for image, image_id in zip(images, image_ids):
            if image is not None:
                self.remember(image_id, max_size, image.size)

    def _put(self, table: OrderedDict, key, value) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > self.capacity:
            table.popitem(last=False)


__all__ = ["SentImages"]
