"""What the two vLLM backends (in process, and a `vllm serve` server over HTTP) share beyond `ChatEngine`.

Both count the prompt without building tensors and send images vLLM already holds by id (`prompts.prepare`,
`SentImages`), and both serve a fine-tune job's LoRA adapter beside the base model when the model picker asks
(`adapters.switch_model`). No torch here.
"""

from abc import abstractmethod

from .adapters import switch_model
from .base import ChatEngine
from .prompts import PreparedPrompt, prepare
from .sent_images import SentImages
from .types import ChatRequest


class VllmBackend(ChatEngine[PreparedPrompt]):
    """A backend whose answers vLLM generates."""

    sent_images: SentImages
    restart_hint: str  # the picker's answer for a model that is neither the base model nor one of its adapters

    def _prepare(self, request: ChatRequest) -> tuple[PreparedPrompt, int]:
        prompt = prepare(self.processor, request.turns, request.settings, self.sent_images)
        return prompt, prompt.prompt_tokens

    def reload(self, path: str, name: str | None = None) -> None:
        """The model picker: a LoRA adapter folder for the base model is served from now on (no restart); the base
        checkpoint switches back to the base model; another model is refused with `restart_hint`."""
        switch_model(self, path, name, self.restart_hint)

    @abstractmethod
    def set_adapter(self, name: str | None, path: str | None = None) -> None:
        """New requests go to the LoRA adapter in `path` (shown as `name`), or to the base model for None."""


__all__ = ["VllmBackend"]
