"""The streaming backend: owns the loaded model, runs `generate` in a worker thread, yields plain events.

No Gradio here. A request carries the conversation (text and image paths per turn), generation settings and a stop
event; `Engine.stream` yields `TextDelta` pieces as tokens are decoded and always ends with one `Finished` event
holding the generation record, whether the answer completed, was stopped, or failed. Failures become specific
messages (unreadable image, prompt too long, out of memory, model not loaded) instead of hangs.
"""

import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from queue import Empty
from typing import Any, cast

import torch
from huggingface_hub import RepoCard
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from model import load_pretrained
from model.loading import adapter_base, resolve_checkpoint
from model.precision import resolve_precision
from model.shared import IMAGE_TOKEN
from model.train.memory_plan import read_config

from .spaces_support import gpu


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


MIN_ANSWER_TOKENS = 16  # below this, an answer lowered to fit the context would say too little to be worth it


def fit_to_context(request: ChatRequest, prompt_tokens: int, context: int, record: GenerationRecord) -> None:
    """Lowers the request's max new tokens to what the context leaves after the prompt, and notes it on `record`
    (the status line says so): a third image in a chat should shorten the answer, not be refused. Every backend
    calls this once it knows the prompt's length.

    Raises:
        EngineError: the prompt leaves fewer than MIN_ANSWER_TOKENS tokens.
    """
    room = context - prompt_tokens
    wanted = request.settings.max_new_tokens
    if wanted <= room:
        return
    if room < min(MIN_ANSWER_TOKENS, wanted):
        raise EngineError(
            f"The prompt is too long for the context: {prompt_tokens} tokens (text and images) leave "
            f"{max(room, 0)} of the model's {context} for the answer. "
            "Clear the chat, use fewer images, or lower the image size."
        )
    request.settings = replace(request.settings, max_new_tokens=room)
    record.new_tokens_limit = room


class _StopOnEvent(StoppingCriteria):
    """Ends generation at the next token once the request's stop event is set (a real stop, not a UI detach)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, stop)


class ImageLimits:
    """The image limits every backend reads off its processor (the app's checks and sliders follow them)."""

    processor: Any

    @property
    def image_max_size(self) -> int:
        return int(self.processor.image_processor.max_size)

    @property
    def patch_size(self) -> int:
        """Pixels a side of one image token."""
        return int(self.processor.image_processor.patch_size)


class Engine(ImageLimits):
    """The transformers backend: one loaded model shared by every user; generations run one at a time."""

    concurrency_limit = 1  # the chat's queue lets one answer at a time reach the lock below

    def __init__(
        self,
        model,
        processor,
        name: str,
        quantization: str | None = None,
        checkpoint_dir=None,
        precision_reason: str | None = None,
    ):
        self.model, self.processor, self.name, self.quantization = model, processor, name, quantization
        self.checkpoint_dir = checkpoint_dir  # where tasks.json lives, if the checkpoint has one
        self.precision_reason = precision_reason  # why this precision, when it was chosen automatically
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, path: str, device: str = "cpu", dtype: str | None = None, quantization: str | None = None
    ) -> "Engine":
        """Loads a checkpoint folder or Hub id; `dtype` by name ("float32", "bfloat16", "float16"); `quantization`
        "8bit", "4bit" or "none". On CUDA with neither given, the precision that fits the GPU's free memory."""
        folder = resolve_checkpoint(path)
        base = adapter_base(folder)  # a LoRA job's folder: the precision is the base model's
        choice = resolve_precision(
            read_config(resolve_checkpoint(base) if base else folder), device, dtype, quantization
        )
        if choice is not None:
            dtype, quantization = choice.dtype, choice.quantization
        quantization = None if quantization == "none" else quantization
        torch_dtype = getattr(torch, dtype) if dtype else None
        model, processor = load_pretrained(folder, device=device, dtype=torch_dtype, quantization=quantization)
        reason = choice.reason if choice else None
        return cls(model, processor, Path(str(path)).name, quantization, folder, precision_reason=reason)

    def reload(self, path: str, name: str | None = None) -> None:
        """Swaps in another checkpoint (e.g. a finished fine-tune, shown as `name`) once no answer is being
        generated; the device, dtype and quantisation the app was started with carry over."""
        fresh = Engine.load(path, device=self.device, dtype=self.dtype, quantization=self.quantization)
        with self._lock:
            self.model, self.processor, self.name = fresh.model, fresh.processor, name or fresh.name
            self.checkpoint_dir = fresh.checkpoint_dir

    @property
    def notice(self) -> str | None:
        """What the checkpoint's model card says a visitor should know (its `demo_notice` field), if anything."""
        return card_notice(self.checkpoint_dir)

    @property
    def gpu_count(self) -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def describe(self) -> str:
        """Model, device, dtype and quantisation, for the status line."""
        line = f"{self.name} · {self.device} · {self.dtype} · {self.quantization or 'not quantised'}"
        return line + (f" ({self.precision_reason})" if self.precision_reason else "")

    def build_inputs(self, turns: list[Turn], settings: GenerationSettings) -> dict:
        """Prompt and pixel tensors for the conversation; raises EngineError for bad images or an over-long prompt."""
        messages, images = [], []
        for turn in turns:
            placeholders = f"{IMAGE_TOKEN}\n" * len(turn.images)
            messages.append({"role": turn.role, "content": placeholders + turn.text})
            images.extend(turn.images)
        prompt = self.processor.build_prompt(messages)
        try:
            inputs = self.processor(text=prompt, images=images, max_size=settings.image_max_size)
        except ValueError as error:
            raise EngineError(str(error)) from error
        return inputs.to(self.model.device)

    @gpu  # on a ZeroGPU Space, a GPU is attached for the duration of one answer
    def stream(self, request: ChatRequest) -> Iterator[TextDelta | Finished]:
        """Yields text pieces as they are generated, then exactly one Finished event."""
        start = time.perf_counter()
        record = GenerationRecord(status="done", text="")
        with self._lock:
            try:
                inputs = self.build_inputs(request.turns, request.settings)
                record.prompt_tokens = int(inputs["input_ids"].shape[1])
                fit_to_context(request, record.prompt_tokens, self.context_length, record)
                for piece in self._generate(inputs, request, record, start):
                    record.text += piece
                    yield TextDelta(piece)
                if request.stop_event.is_set():
                    record.status = "stopped"
            except EngineError as error:
                record.status, record.error = "error", str(error)
            except torch.OutOfMemoryError:
                record.status, record.error = "error", "Out of memory: try a smaller image size or fewer new tokens."
            except Exception as error:  # noqa: BLE001 -- any failure ends the answer with a message, never a hang
                record.status, record.error = "error", f"Generation failed: {type(error).__name__}: {error}"
        record.duration = time.perf_counter() - start
        yield Finished(record)

    def _generate(self, inputs: dict, request: ChatRequest, record: GenerationRecord, start: float) -> Iterator[str]:
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        counter = _TokenCounter(record, start)
        failure: list[BaseException] = []
        settings = request.settings
        if settings.seed is not None:
            torch.manual_seed(settings.seed)

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(
                        **inputs,
                        **settings.generate_kwargs(),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_StopOnEvent(request.stop_event), counter]),
                    )
            except BaseException as error:  # noqa: BLE001 -- handed to the consumer below
                failure.append(error)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while True:
                try:
                    piece = streamer.text_queue.get(timeout=0.1)
                except Empty:
                    if not worker.is_alive() and streamer.text_queue.empty():
                        break
                    continue
                if piece is streamer.stop_signal:
                    break
                if piece:
                    yield piece
        except GeneratorExit:  # the consumer went away (closed tab, cancelled event): stop the worker too
            request.stop_event.set()
            worker.join()
            raise
        worker.join()
        if failure:
            raise failure[0]


@functools.cache
def card_notice(checkpoint_dir) -> str | None:
    """The `demo_notice` field of a checkpoint's model card (README.md front matter), read once per checkpoint."""
    card = Path(str(checkpoint_dir or "")) / "README.md"
    if not card.is_file() or not card.read_text(encoding="utf-8", errors="replace").startswith("---"):
        return None
    try:
        return RepoCard.load(card).data.to_dict().get("demo_notice")
    except Exception:  # noqa: BLE001 -- a card with broken front matter simply has no notice
        return None


class _TokenCounter(StoppingCriteria):
    """Counts new tokens and notes when the first arrived; never stops anything."""

    def __init__(self, record: GenerationRecord, start: float):
        self.record, self.start = record, start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        if self.record.new_tokens == 0:
            self.record.time_to_first_token = time.perf_counter() - self.start
        self.record.new_tokens += 1
        return cast(torch.BoolTensor, torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device))
