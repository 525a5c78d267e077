"""Conversation templates as data: how turns become text, and which parts of it a training loss supervises.

`qwen2` is the official EVEv2 chat format (`conv_qwen_v2`: Vicuna-style text, not ChatML)::

    {system} USER: <image>\\n{question} ASSISTANT: {answer}<|im_end|>USER: {question} ASSISTANT:

`plain` is the official pre-training format: the image placeholder followed by the caption and a newline.

`ChatTemplate.to_jinja` writes the same format as a Jinja chat template, which `EveProcessor.apply_chat_template`
and vLLM's server render; messages there may also carry image content blocks (`{"type": "image"}`), each of which
becomes the image token `<|image_pad|>` and a newline, where the official prompts put `<image>`. A leading system
message replaces the default system sentence.
"""

import json
from dataclasses import dataclass

from .shared import IMAGE_TOKEN

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    system: str  # text before the first turn
    user_prefix: str
    user_suffix: str
    assistant_prefix: str  # ends the generation prompt
    answer_prefix: str  # between assistant_prefix and the answer
    turn_end: str  # after every answer; supervised together with the answer
    keep_user_text: bool = True  # plain pre-training keeps only the image placeholder of the user turn

    def segments(self, messages: list[Message], add_generation_prompt: bool = True) -> list[tuple[str, bool]]:
        """The conversation as (text, supervised) pieces, in order; concatenated they give the prompt text.

        Answers (and their turn end) are the supervised pieces; everything up to and including the assistant
        prefix is context, as in the official label masking.
        """
        system = self.system
        if messages and messages[0]["role"] == "system":
            system, messages = messages[0]["content"] + " ", messages[1:]
        pieces: list[tuple[str, bool]] = [(system, False)] if system else []
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "user":
                text = content if self.keep_user_text else IMAGE_TOKEN * content.count(IMAGE_TOKEN)
                pieces.append((self.user_prefix + text + self.user_suffix + self.assistant_prefix, False))
            elif role == "assistant":
                pieces.append((self.answer_prefix + content + self.turn_end, True))
            else:
                raise ValueError(f"Unknown role {role!r}: messages take 'user' or 'assistant' after one 'system'")
        if not add_generation_prompt and pieces and not pieces[-1][1]:
            # A trailing user turn without the generation prompt: drop the assistant prefix.
            text = pieces[-1][0]
            pieces[-1] = (text[: len(text) - len(self.assistant_prefix)], False)
        return pieces

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        return "".join(text for text, _ in self.segments(messages, add_generation_prompt))

    def to_jinja(self) -> str:
        """This format as a Jinja chat template (transformers' `apply_chat_template`), from the same fields, so the
        two cannot drift apart; `tests/model/test_processing.py` renders both."""

        def literal(text: str) -> str:
            return json.dumps(text)  # a JSON string is a valid Jinja string literal

        user_text = "text" if self.keep_user_text else f"{literal(IMAGE_TOKEN)} * text.count({literal(IMAGE_TOKEN)})"
        return (
            "{%- macro content(message) -%}"
            "{%- if message['content'] is string -%}{{- message['content'] -}}"
            "{%- else -%}{%- for block in message['content'] -%}"
            f"{{%- if block['type'] == 'image' -%}}{{{{- {literal(IMAGE_TOKEN + chr(10))} -}}}}"
            "{%- elif block['type'] == 'text' -%}{{- block['text'] -}}{%- endif -%}"
            "{%- endfor -%}{%- endif -%}"
            "{%- endmacro -%}"
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{{- content(messages[0]) + ' ' -}}{%- set messages = messages[1:] -%}"
            f"{{%- else -%}}{{{{- {literal(self.system)} -}}}}{{%- endif -%}}"
            "{%- for message in messages -%}"
            "{%- set text = content(message) -%}"
            "{%- if message['role'] == 'user' -%}"
            f"{{{{- {literal(self.user_prefix)} + {user_text} + {literal(self.user_suffix)} -}}}}"
            f"{{%- if add_generation_prompt or not loop.last -%}}{{{{- {literal(self.assistant_prefix)} -}}}}{{%- endif -%}}"
            "{%- elif message['role'] == 'assistant' -%}"
            f"{{{{- {literal(self.answer_prefix)} + text + {literal(self.turn_end)} -}}}}"
            "{%- else -%}"
            "{{- raise_exception(\"Unknown role '\" + message['role'] + \"': messages take 'user' or 'assistant'\") -}}"
            "{%- endif -%}"
            "{%- endfor -%}"
        )


TEMPLATES = {
    "qwen2": ChatTemplate(
        name="qwen2",
        system=(
            "A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions. "
        ),
        user_prefix="USER: ",
        user_suffix=" ",
        assistant_prefix="ASSISTANT:",
        answer_prefix=" ",
        turn_end="<|im_end|>",
    ),
    "plain": ChatTemplate(
        name="plain",
        system="",
        user_prefix="",
        user_suffix="",
        assistant_prefix="",
        answer_prefix="",
        turn_end="\n",
        keep_user_text=False,
    ),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}; choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[name]
