"""The plugin's pieces that need no engine: entry point, chat template, placeholder rule, token bound."""

import json
from importlib.metadata import entry_points
from pathlib import Path

import jinja2
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model.chat_template import get_template
from model.image_processing_eve import EveImageProcessor
from model.vllm import CHAT_TEMPLATE
from model.vllm.processing import max_image_tokens, resolve_image_token_id

ROOT = Path(__file__).resolve().parents[2]

CONVERSATIONS = [
    [{"role": "user", "content": "<image>\nWhat is written here?"}],
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
        {"role": "user", "content": "<image>\n<image>\ncompare them"},
    ],
    [{"role": "user", "content": "<image>\nread it"}, {"role": "assistant", "content": "STOP"}],
]


def test_entry_point_names_the_register_function():
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("eve") == "model.vllm:register"


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_jinja_template_renders_what_the_library_builds(messages, add_generation_prompt):
    template = jinja2.Environment().from_string(CHAT_TEMPLATE.read_text())
    rendered = template.render(messages=messages, add_generation_prompt=add_generation_prompt)
    assert rendered == get_template("qwen2").render(messages, add_generation_prompt)


def test_system_message_replaces_the_default_sentence():
    template = jinja2.Environment().from_string(CHAT_TEMPLATE.read_text())
    text = template.render(
        messages=[{"role": "system", "content": "Be brief."}, *CONVERSATIONS[0]], add_generation_prompt=True
    )
    assert text == "Be brief. USER: <image>\nWhat is written here? ASSISTANT:"


def test_the_image_placeholder_must_be_a_dedicated_token():
    shipped = AutoTokenizer.from_pretrained(ROOT / "assets" / "eve-tiny")
    config = json.loads((ROOT / "assets" / "eve-tiny" / "config.json").read_text())
    assert resolve_image_token_id(shipped) == config["image_token_id"] != config["pad_token_id"]
    # A tokenizer without <|image_pad|> (the first default model wrote images as its pad id 0) cannot be served.
    vocab = {"<|endoftext|>": 0, "a": 1}
    bare = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<|endoftext|>")), pad_token="<|endoftext|>"
    )
    with pytest.raises(ValueError, match="dedicated token id"):
        resolve_image_token_id(bare)


def test_token_bound_covers_every_aspect_ratio_at_the_official_size():
    processor = EveImageProcessor()  # official: 1600 px, 32 px patches
    bound = max_image_tokens(processor, limit=32768)
    for width, height in [(1600, 1600), (1920, 1080), (4000, 1000), (640, 480), (10000, 300), (33, 5000)]:
        w, h = processor.target_size(width, height)
        assert processor.num_image_tokens(h, w) <= bound, (width, height)
