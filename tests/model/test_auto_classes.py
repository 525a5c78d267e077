"""The transformers way: AutoConfig, AutoModelForCausalLM and AutoProcessor load EVEv2 checkpoints, and
`apply_chat_template` gives the official prompt, with the same ids, pixels and logits as `load_pretrained`."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

import model.auto  # noqa: F401  (registers eve-qwen2)
from model import EveConfig, EveForCausalLM, EveProcessor, load_pretrained
from model.shared import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "assets" / "eve-tiny"
IMAGE = Image.new("RGB", (90, 50), (200, 30, 30))
QUESTION = "What is written here?"
# The same conversation as `build_prompt` takes it (placeholders in the text) and as chat templates take it (blocks).
AS_TEXT = [{"role": "user", "content": f"<|image_pad|>\n{QUESTION}"}]
AS_BLOCKS = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]


def _inputs_and_logits(model, processor):
    prompt = processor.apply_chat_template(AS_BLOCKS, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[IMAGE])
    with torch.no_grad():
        logits = model(**inputs).logits
    return inputs, logits


def _assert_same(expected, actual):
    (inputs, logits), (inputs_again, logits_again) = expected, actual
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        assert torch.equal(inputs[key], inputs_again[key]), key
    assert len(inputs["pixel_values"]) == len(inputs_again["pixel_values"]) == 1
    assert torch.equal(inputs["pixel_values"][0], inputs_again["pixel_values"][0])
    assert torch.equal(logits, logits_again)


def test_auto_classes_give_the_ids_pixels_and_logits_of_load_pretrained(tiny_checkpoint, tmp_path):
    reference_model, reference_processor = load_pretrained(tiny_checkpoint)
    reference = _inputs_and_logits(reference_model, reference_processor)
    assert reference[0]["mm_token_type_ids"].sum() > 0  # the image really is in the prompt

    assert isinstance(AutoConfig.from_pretrained(tiny_checkpoint), EveConfig)
    auto_model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    auto_processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    assert isinstance(auto_model, EveForCausalLM) and isinstance(auto_processor, EveProcessor)
    _assert_same(reference, _inputs_and_logits(auto_model, auto_processor))

    # save_pretrained writes the transformers files, and the Auto classes read them back to the same numbers.
    auto_model.save_pretrained(tmp_path)
    auto_processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "chat_template.jinja"} <= {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == "EveProcessor"
    again = (AutoModelForCausalLM.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path))
    _assert_same(reference, _inputs_and_logits(*again))
    _assert_same(reference, _inputs_and_logits(*load_pretrained(tmp_path)))


def test_the_shipped_model_loads_with_the_auto_classes():
    reference_model, reference_processor = load_pretrained(SHIPPED)
    auto_processor = AutoProcessor.from_pretrained(SHIPPED)
    assert auto_processor.template.name == "qwen2"  # from its eve_processor.json
    assert auto_processor.image_processor.to_dict() == reference_processor.image_processor.to_dict()
    _assert_same(
        _inputs_and_logits(reference_model, reference_processor),
        _inputs_and_logits(AutoModelForCausalLM.from_pretrained(SHIPPED), auto_processor),
    )


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_apply_chat_template_renders_the_official_prompt(tiny, add_generation_prompt):
    _, processor = tiny
    official = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <|image_pad|>\nWhat is written here? ASSISTANT:"
    )
    prompt = processor.apply_chat_template(AS_BLOCKS, add_generation_prompt=add_generation_prompt)
    assert prompt == (official if add_generation_prompt else official.removesuffix("ASSISTANT:"))


@pytest.mark.parametrize("template", ["qwen2", "plain"])
def test_apply_chat_template_equals_build_prompt_over_turns_and_images(tiny, template):
    _, loaded = tiny
    processor = EveProcessor(loaded.tokenizer, loaded.image_processor, template=template)
    as_text = [
        {"role": "user", "content": "<|image_pad|>\n<|image_pad|>\nCompare the signs."},
        {"role": "assistant", "content": "Both read hello."},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "world"},
        {"role": "user", "content": "<|image_pad|>\nThis one?"},
    ]
    as_blocks = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare the signs."}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "Both read hello."}]},
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "world"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "This one?"}]},
    ]
    for add in (True, False):
        for turns in (1, 2, 5):
            expected = processor.build_prompt(as_text[:turns], add_generation_prompt=add)
            assert processor.apply_chat_template(as_blocks[:turns], add_generation_prompt=add) == expected


def test_apply_chat_template_rejects_an_unknown_role(tiny):
    _, processor = tiny
    with pytest.raises(Exception, match="Unknown role 'tool'"):
        processor.apply_chat_template([{"role": "tool", "content": "42"}])


def test_a_system_message_replaces_the_default_sentence(tiny):
    _, processor = tiny
    messages = [{"role": "system", "content": "Be brief."}, *AS_TEXT]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == processor.build_prompt(messages) == f"Be brief. USER: <|image_pad|>\n{QUESTION} ASSISTANT:"


def test_apply_chat_template_can_tokenise_with_the_images(tiny):
    _, processor = tiny
    blocks = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": QUESTION}]}]
    tokenised = processor.apply_chat_template(blocks, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text=processor.build_prompt(AS_TEXT), images=[IMAGE])
    assert torch.equal(tokenised["input_ids"], direct["input_ids"])
    assert torch.equal(tokenised["mm_token_type_ids"], direct["mm_token_type_ids"])
    assert torch.equal(tokenised["pixel_values"][0], direct["pixel_values"][0])


def test_a_processor_saved_by_older_runs_still_loads(tiny_checkpoint, tmp_path):
    """Runs before the ProcessorMixin wrote only eve_processor.json next to the tokenizer; its template is kept."""
    folder = Path(shutil.copytree(tiny_checkpoint, tmp_path / "old-run"))
    (folder / "eve_processor.json").write_text(json.dumps({"template": "plain"}))
    for processor in (AutoProcessor.from_pretrained(folder), load_pretrained(folder)[1]):
        assert isinstance(processor, EveProcessor) and processor.template.name == "plain"
        assert processor.apply_chat_template(AS_BLOCKS, add_generation_prompt=True) == "<|image_pad|>"


def test_the_auto_classes_read_a_hub_id_from_the_hub_cache(tiny_in_hub_cache):
    """Offline, `AutoProcessor` and `AutoModelForCausalLM` find a repo id's snapshot, as `load_pretrained` does."""
    processor = AutoProcessor.from_pretrained(tiny_in_hub_cache)
    assert isinstance(processor, EveProcessor) and processor.image_processor.max_size == 64
    assert isinstance(AutoModelForCausalLM.from_pretrained(tiny_in_hub_cache), EveForCausalLM)


def test_a_saved_processor_loads_through_the_library_modules_alone(tiny_checkpoint, tmp_path):
    """Training and export code import `model.loading` directly, without `model.auto`: loading a folder with a
    `processor_config.json` must still find the image processor (a fresh interpreter, nothing registered yet)."""
    model_, processor = load_pretrained(tiny_checkpoint)
    model_.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    code = (
        "import sys; from model.loading import load_pretrained; "
        f"_, p = load_pretrained({str(tmp_path)!r}); print(type(p.image_processor).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("EveImageProcessor")
