"""The `--api-base` backend: a running vLLM OpenAI-compatible server (`vllm serve`), reached over HTTP.

Answers stream from `/v1/chat/completions` (server-sent events) with the images as data URLs; the server renders
the EVEv2 chat template, so the prompt is the one the library builds. The app still reads the checkpoint named by
`--model` (config and tokenizer only, no weights) to check images and prompt length before a request is sent; give
it the same checkpoint the server serves. Stop closes the stream, and vLLM aborts a request whose client went away.
LoRA adapters the server serves (`--enable-lora --lora-modules job-7=PATH`) are models by their own names: the model
picker switches the requests to one (`reload`), and back to the base model. A chunk that is not what the OpenAI API
sends ends the answer with an error naming what was wrong. Importing this module loads no torch.
"""

import base64
import json
import logging
import mimetypes
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from ..errors import UserError
from .adapters import same_folder
from .prompts import PreparedPrompt, sampling_fields
from .retry import RetryableError, with_one_retry
from .sent_images import SentImages
from .types import ChatRequest, EngineError, GenerationRecord
from .vllm_common import VllmBackend

if TYPE_CHECKING:
    from model.processing_eve import EveProcessor

log = logging.getLogger(__name__)


class OpenAIEngine(VllmBackend):
    """A client of one OpenAI-compatible server; as many answers at once as `concurrency_limit`."""

    restart_hint = "With --api-base the model server decides the model; restart it with another checkpoint."

    def __init__(
        self,
        base_url: str,
        served_name: str,
        max_model_len: int,
        processor: "EveProcessor",
        checkpoint_dir: str,
        api_key: str | None = None,
        concurrency_limit: int = 16,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url, self.served_name = base_url, served_name
        self._max_model_len = max_model_len
        self.processor, self.checkpoint_dir = processor, checkpoint_dir
        self.name = self.base_name = served_name
        self.concurrency_limit = concurrency_limit
        self.quantization = None
        self.sent_images = SentImages()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No read timeout: a long prefill may pass minutes before the first byte.
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(10.0, read=None), transport=transport
        )

    @classmethod
    def connect(cls, api_base: str, model_path: str, api_key: str | None = None) -> "OpenAIEngine":
        """Asks the server what it serves; reads the tokenizer and image settings of `model_path` locally."""
        base = api_base.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            models = httpx.get(f"{base}/models", headers=headers, timeout=10.0).raise_for_status().json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise EngineError(f"No OpenAI-compatible model server answers at {base}: {error}") from error
        served = next((model for model in models if not model.get("parent")), models[0])  # not a LoRA adapter
        from model import EveConfig, EveProcessor  # the library's processor loads torch; only now, not on import

        folder = _settings_folder(model_path)
        config = EveConfig.from_pretrained(folder)
        processor = EveProcessor.from_pretrained(folder, config)
        max_len = int(served.get("max_model_len") or config.max_position_embeddings)
        log.info("Answers come from %s (%s, context %d)", base, served["id"], max_len)
        return cls(base, served["id"], max_len, processor, folder, api_key)

    def set_adapter(self, name: str | None, path: str | None = None) -> None:
        """Requests go to the server's model of the LoRA adapter in `path` (by its name or its folder), or to the base
        model for None. An adapter the server lacks is loaded there where the server allows it
        (VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); otherwise the message says how to serve it."""
        if name is None:
            self.served_name = self.name = self.base_name
            return
        try:
            models = self._client.get("/models").raise_for_status().json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as error:
            raise UserError(f"The model server did not list its models: {error}") from None
        served = next(
            (
                model["id"]
                for model in models
                if model.get("parent") and (model["id"] == name or same_folder(model.get("root", ""), path or ""))
            ),
            None,
        )
        if served is None:
            response = self._client.post("/load_lora_adapter", json={"lora_name": name, "lora_path": path})
            if response.status_code != 200:
                raise UserError(
                    f"The model server does not serve the adapter {name}: start it with --enable-lora "
                    f"--lora-modules {name}={path} (it said: {_error_message(response)})"
                )
            served = name
        self.served_name = self.name = served

    @property
    def context_length(self) -> int:
        return self._max_model_len

    def describe(self) -> str:
        model = self.served_name if self.served_name == self.base_name else f"{self.served_name} (LoRA)"
        return f"{model} · vLLM server {self.base_url}"

    def _generate(
        self, request: ChatRequest, prompt: PreparedPrompt, record: GenerationRecord, start: float
    ) -> Iterator[str]:
        return with_one_retry(lambda attempt: self._attempt(request, prompt, record, start, attempt), request, record)

    def _failure_message(self, error: Exception) -> str:
        if isinstance(error, httpx.HTTPError):
            return f"The model server failed: {type(error).__name__}: {error}"
        return super()._failure_message(error)

    def _body(self, request: ChatRequest, prompt: PreparedPrompt, with_pixels: bool) -> dict:
        """The chat request; each image carries its content digest as vLLM's id (`uuid`), and goes without its data
        when the server was sent it before (unless `with_pixels`)."""
        messages = []
        image_ids = iter(zip(prompt.images, prompt.image_ids))  # in turn order, as `prepare` lists them
        for turn in request.turns:
            parts = []
            for path, (image, image_id) in zip(turn.images, image_ids):
                url = {"url": _data_url(path)} if image is not None or with_pixels else None
                parts.append({"type": "image_url", "image_url": url, "uuid": image_id})
            if parts:
                messages.append({"role": turn.role, "content": [*parts, {"type": "text", "text": turn.text}]})
            else:
                messages.append({"role": turn.role, "content": turn.text})
        body = {
            "model": self.served_name,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling_fields(request.settings, self.processor.stop_token_ids),
        }
        if request.settings.image_max_size:
            body["mm_processor_kwargs"] = {"max_size": int(request.settings.image_max_size)}
        return body

    def _attempt(
        self, request: ChatRequest, prompt: PreparedPrompt, record: GenerationRecord, start: float, attempt: int
    ) -> Iterator[str]:
        """Streams the answer's text pieces; raises RetryableError for the server's error event, or for a refusal
        while images went by id only (the server may no longer hold them: the second attempt sends every image)."""
        body = self._body(request, prompt, with_pixels=attempt > 0)
        with self._client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                message = f"The model server refused the request: {_error_message(response)}"
                raise (RetryableError if attempt == 0 and None in prompt.images else EngineError)(message)
            # the server has processed the images
            self.sent_images.remember_sent(prompt.images, prompt.image_ids, request.settings.image_max_size)
            for line in response.iter_lines():
                if request.stop_event.is_set():
                    return  # leaving the block closes the connection; vLLM aborts the request
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                text = _chunk_text(line[len("data: ") :], record)
                if text:
                    if record.time_to_first_token is None:
                        record.time_to_first_token = time.perf_counter() - start
                    record.new_tokens += 1  # one token a chunk; the final usage replaces the count
                    yield text


def _chunk_text(data: str, record: GenerationRecord) -> str:
    """The text of one streamed `chat.completion.chunk`; its token counts (`usage`) go to `record`. Raises
    RetryableError for the server's error event, EngineError for a chunk that is not what the OpenAI API sends."""
    try:
        chunk = json.loads(data)
    except ValueError as error:
        raise _malformed(f"not JSON ({error})", data) from None
    if not isinstance(chunk, dict):
        raise _malformed("not a JSON object", data)
    if failure := chunk.get("error"):
        # vLLM's server sends this for a request its engine ended with an error (retryable, see retry.py)
        message = failure.get("message", failure) if isinstance(failure, dict) else failure
        raise RetryableError(f"The model server failed: {message}")
    usage = chunk.get("usage")
    if usage is not None:
        counts = [usage.get(key) for key in ("prompt_tokens", "completion_tokens")] if isinstance(usage, dict) else []
        if not counts or not all(count is None or isinstance(count, int) for count in counts):
            raise _malformed("`usage` is not an object of token counts", data)
        record.prompt_tokens = counts[0] if counts[0] is not None else record.prompt_tokens
        record.new_tokens = counts[1] if counts[1] is not None else record.new_tokens
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise _malformed("`choices` is missing or not a list of objects", data)
    text = ""
    for choice in choices:
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if not isinstance(delta, dict) or not isinstance(content, str | None):
            raise _malformed("a choice's `delta` is not an object with text as its `content`", data)
        text += content or ""
    return text


def _malformed(what: str, data: str) -> EngineError:
    """The answer's error for a chunk the server should not have sent; logged once, with the chunk's start."""
    log.warning("The model server sent a malformed chunk (%s): %.200s", what, data)
    return EngineError(f"The model server sent a malformed answer: a streamed chunk is {what}.")


def _settings_folder(model_path: str) -> str:
    """The checkpoint folder; for a Hub id, only its config, tokenizer and card (the server has the weights)."""
    if Path(model_path).expanduser().is_dir():
        from model.loading import resolve_checkpoint

        return str(resolve_checkpoint(model_path))
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_path, allow_patterns=["*.json", "*.txt", "*.jinja", "README.md"])
    except Exception as error:  # offline without a cached copy, unknown repo, no network, ...
        raise EngineError(f"Could not read the settings of {model_path}: {error}") from error


def _data_url(path: str) -> str:
    mime = mimetypes.guess_type(path)[0]
    if not mime or not mime.startswith("image/"):  # stored images are named by content hash
        from PIL import Image

        with Image.open(path) as image:
            mime = Image.MIME.get(image.format or "", "image/png")
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _error_message(response: httpx.Response) -> str:
    response.read()
    try:
        error = response.json().get("error") or response.json()
        return error.get("message", str(error)) if isinstance(error, dict) else str(error)
    except ValueError:
        return response.text[:300]


__all__ = ["OpenAIEngine"]
