"""The plugin's pieces that need no engine: entry point, chat template, placeholder rule, token bound."""

import json
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from model.chat_template import get_template
from model.image_processing_eve import EveImageProcessor
from model.vllm.processing import max_image_tokens, resolve_image_token_id
from tests.vllm.checkpoints import CHATML, write_official

ROOT = Path(__file__).resolve().parents[2]


def test_entry_point_names_the_register_function():
    plugins = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert plugins.get("eve") == "model.vllm:register"


def test_vllm_renders_the_processors_chat_template_with_nothing_patched(tmp_path):
    """The official layout's tokenizer carries ChatML; vLLM's own resolver picks the processor's template first."""
    from vllm.renderers import hf

    from model.vllm import register

    resolver = hf.resolve_chat_template
    register()
    assert hf.resolve_chat_template is resolver and resolver.__module__ == "vllm.renderers.hf"
    folder = write_official(tmp_path / "official")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == CHATML
    model_config = SimpleNamespace(  # the fields the resolver reads
        tokenizer=str(folder),
        model=str(folder),
        tokenizer_revision=None,
        code_revision=None,
        trust_remote_code=False,
        hf_config=SimpleNamespace(model_type="eve-qwen2"),
    )
    template = hf.resolve_chat_template(tokenizer, None, None, model_config=model_config)
    assert template == get_template("qwen2").to_jinja()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is written here?"}]}]
    text = jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    assert text.endswith("USER: <|image_pad|>\nWhat is written here? ASSISTANT:")


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


def test_the_model_takes_its_token_facts_from_the_config_alone():
    """vLLM builds the model before any tokenizer: the placeholder id and the ids in use come from config.json."""
    from model import EveConfig
    from model.vllm import placeholder_token_id, tokens_in_use

    shipped = EveConfig.from_pretrained(ROOT / "assets" / "eve-tiny")
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "assets" / "eve-tiny")
    assert placeholder_token_id(shipped) == resolve_image_token_id(tokenizer)
    assert tokens_in_use(shipped) == len(tokenizer) < shipped.vocab_size
    # The official release records neither (image id 0, as its code writes): Qwen2.5's tokenizer's figures.
    official = EveConfig()
    assert (placeholder_token_id(official), tokens_in_use(official)) == (151655, 151665)
    # An official-layout config with another vocabulary must say which field to set.
    with pytest.raises(ValueError, match="image_token_id"):
        placeholder_token_id(EveConfig(vocab_size=336))


def test_token_bound_covers_every_aspect_ratio_at_the_official_size():
    processor = EveImageProcessor()  # official: 1600 px, 32 px patches
    bound = max_image_tokens(processor, limit=32768)
    for width, height in [(1600, 1600), (1920, 1080), (4000, 1000), (640, 480), (10000, 300), (33, 5000)]:
        w, h = processor.target_size(width, height)
        assert processor.num_image_tokens(h, w) <= bound, (width, height)
