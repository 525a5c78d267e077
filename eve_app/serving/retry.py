"""One more attempt for a request that vLLM ended with its retryable error before showing anything.

vLLM's processor cache keeps processed images in the front end and in the engine; a request that fails after its
image was processed leaves the two out of step. vLLM then ends the next request with that image at once (finish
reason "error"; the server sends an error event) and mends the cache, so the same request sent again carries the
image data and is answered. The same second attempt, with every image's pixels, follows a refusal of a request that
sent earlier images by id only (`SentImages`: the cache may have evicted them). Both vLLM backends stream through
`with_one_retry`.
"""

import logging
from collections.abc import Callable, Iterator

from .types import ChatRequest, EngineError, GenerationRecord

log = logging.getLogger(__name__)


class RetryableError(EngineError):
    """The engine ended a request with an error that another attempt may not meet."""


def with_one_retry(
    generate: Callable[[int], Iterator[str]], request: ChatRequest, record: GenerationRecord
) -> Iterator[str]:
    """The pieces of `generate(attempt)`; sends the request once more after a RetryableError that came before any
    token (`record`, which `ChatEngine.stream` fills as pieces pass) and before Stop. A second failure, or one after
    text was shown, is raised to the caller."""
    for attempt in range(2):
        try:
            yield from generate(attempt)
            return
        except RetryableError:
            if attempt or record.text or record.new_tokens or request.stop_event.is_set():
                raise
            log.warning("The engine failed a request before any token; sending it again")


__all__ = ["RetryableError", "with_one_retry"]
