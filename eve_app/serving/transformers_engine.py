"""The `transformers` backend (the default): owns the loaded model, runs `generate` in a worker thread.

No Gradio here. `stream` yields `TextDelta` pieces as tokens are decoded and always ends with one `Finished` event
holding the generation record, whether the answer completed, was stopped, or failed. Failures become specific
messages (unreadable image, prompt too long, out of memory, model not loaded) instead of hangs.
"""

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import cast

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from model import load_pretrained
from model.loading import adapter_base, resolve_checkpoint
from model.precision import resolve_precision
from model.train.memory_plan import read_config

from ..spaces_support import gpu
from .base import ChatEngine
from .prompts import chat_messages
from .types import ChatRequest, EngineError, Finished, GenerationRecord, GenerationSettings, TextDelta, Turn


class _StopOnEvent(StoppingCriteria):
    """Ends generation at the next token once the request's stop event is set (a real stop, not a UI detach)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        stop = torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
        return cast(torch.BoolTensor, stop)


class TransformersEngine(ChatEngine[dict]):
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
    ) -> "TransformersEngine":
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
        fresh = TransformersEngine.load(path, device=self.device, dtype=self.dtype, quantization=self.quantization)
        with self._lock:
            self.model, self.processor, self.name = fresh.model, fresh.processor, name or fresh.name
            self.checkpoint_dir = fresh.checkpoint_dir

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
        """Prompt and pixel tensors for the conversation; raises EngineError for an unreadable image."""
        messages, images = chat_messages(turns)
        prompt = self.processor.build_prompt(messages)
        try:
            inputs = self.processor(text=prompt, images=images, max_size=settings.image_max_size)
        except ValueError as error:
            raise EngineError(str(error)) from error
        return inputs.to(self.model.device)

    @gpu  # on a ZeroGPU Space, a GPU is attached for the duration of one answer
    def stream(self, request: ChatRequest) -> Iterator[TextDelta | Finished]:
        yield from super().stream(request)

    def _generation_slot(self) -> threading.Lock:
        return self._lock  # one `generate` at a time; `reload` waits for it

    def _prepare(self, request: ChatRequest) -> tuple[dict, int]:
        inputs = self.build_inputs(request.turns, request.settings)
        return inputs, int(inputs["input_ids"].shape[1])

    def _failure_message(self, error: Exception) -> str:
        if isinstance(error, torch.OutOfMemoryError):
            return "Out of memory: try a smaller image size or fewer new tokens."
        return super()._failure_message(error)

    def _generate(self, request: ChatRequest, inputs: dict, record: GenerationRecord, start: float) -> Iterator[str]:
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


class _TokenCounter(StoppingCriteria):
    """Counts new tokens and notes when the first arrived; never stops anything."""

    def __init__(self, record: GenerationRecord, start: float):
        self.record, self.start = record, start

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        if self.record.new_tokens == 0:
            self.record.time_to_first_token = time.perf_counter() - self.start
        self.record.new_tokens += 1
        return cast(torch.BoolTensor, torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device))
