"""What a backend is asked and what it answers: plain data, no torch, shared by the app and every backend.

A `ChatRequest` carries the conversation (text and image paths per turn), the generation settings and a stop event;
a backend's `stream` yields `TextDelta` pieces as tokens are decoded and always ends with one `Finished` event holding
the `GenerationRecord`, whether the answer completed, was stopped, or failed (`EngineError`: a message for the user).
"""

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    image_max_size: int | None = None  # None: the model's own setting

    def generate_kwargs(self) -> dict:
        sampling = self.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sampling,
            "repetition_penalty": self.repetition_penalty,
        }
        if sampling:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    text: str
    images: list[str] = field(default_factory=list)  # file paths, user turns only


@dataclass
class ChatRequest:
    turns: list[Turn]
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    stop_event: threading.Event = field(default_factory=threading.Event)


@dataclass
class TextDelta:
    text: str


@dataclass
class GenerationRecord:
    status: str  # "done", "stopped" or "error"
    text: str
    prompt_tokens: int = 0
    new_tokens: int = 0
    time_to_first_token: float | None = None
    duration: float = 0.0
    error: str | None = None
    new_tokens_limit: int | None = None  # max new tokens lowered to what the context left after the prompt

    @property
    def tokens_per_second(self) -> float:
        decode_time = self.duration - (self.time_to_first_token or 0.0)
        return (self.new_tokens - 1) / decode_time if self.new_tokens > 1 and decode_time > 0 else 0.0


@dataclass
class Finished:
    record: GenerationRecord


class EngineError(Exception):
    """A failure with a message meant for the user."""


__all__ = [
    "ChatRequest",
    "EngineError",
    "Finished",
    "GenerationRecord",
    "GenerationSettings",
    "TextDelta",
    "Turn",
]
