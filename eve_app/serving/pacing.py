"""Streamed pieces at a bounded rate: an engine yields one text piece per token (or per engine step); every piece the
app passes on costs a hop to Gradio's event loop, a diff of the output and a server-sent event, about 2 ms of the
app's CPU each (docs/benchmarks.md, many visitors). `paced` joins the pieces that arrive within `interval` seconds
of the last one passed on, so a chat gets at most one piece per interval whatever the engine's speed, and its final
event always follows the complete text.
"""

import time
from collections.abc import Iterator

from .types import Finished, TextDelta

STREAM_INTERVAL = 0.05  # seconds: 20 pieces a second a chat read as smoothly as one per token


def paced(events: Iterator[TextDelta | Finished], interval: float = STREAM_INTERVAL) -> Iterator[TextDelta | Finished]:
    """`events` with the text pieces that come within `interval` of the previous piece passed on joined into the next
    one. The first piece passes at once; text held back leaves with the next piece after the interval, or before any
    other event (the `Finished` event, however the stream ends). Closing this stream closes `events`.

    A held piece waits for the next token (at most the engine's time between two tokens), not for a timer: the
    stream is a plain iterator, and the engine's stream keeps its own pace."""
    held, passed_at = "", -float("inf")
    try:
        for event in events:
            if not isinstance(event, TextDelta):
                if held:
                    yield TextDelta(held)
                    held = ""
                yield event
                continue
            held += event.text
            now = time.monotonic()
            if held and now - passed_at >= interval:
                yield TextDelta(held)
                held, passed_at = "", now
        if held:
            yield TextDelta(held)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


__all__ = ["STREAM_INTERVAL", "paced"]
