"""load_pretrained on official-layout checkpoints: strict keys, defaults, quantisation, round trip, clear errors."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

from model import EveForCausalLM, load_pretrained


def _file_tensors(folder):
    tensors = {}
    for shard in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_official_layout_loads_strictly_with_the_files_values(tiny_checkpoint):
    model, info = EveForCausalLM.from_pretrained(str(tiny_checkpoint), output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    on_disk = _file_tensors(tiny_checkpoint)
    state = model.state_dict()
    assert set(state) == set(on_disk)
    for key, tensor in on_disk.items():
        assert torch.equal(state[key], tensor), key


def test_defaults_fp32_sdpa_on_cpu_and_config_fields_read_as_written(tiny_checkpoint):
    model, processor = load_pretrained(tiny_checkpoint)
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    assert model.config.mm_vision_tower == "openai/eve-anyratio-res1600-patch16"  # a folder that does not exist
    assert model.config.rope_parameters["rope_theta"] == 1e6
    assert processor.image_processor.patch_size == 16 and processor.image_processor.max_size == 64
    # RoPE frequencies survive meta-device construction.
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    expected = 1.0 / (1e6 ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected)
    assert model.generation_config.eos_token_id == processor.stop_token_ids


def test_auto_classes_know_eve_qwen2(tiny_checkpoint):
    config = AutoConfig.from_pretrained(str(tiny_checkpoint))
    assert config.model_type == "eve-qwen2"
    assert isinstance(AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint)), EveForCausalLM)


def test_save_and_load_round_trip_is_exact(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, processor_again = load_pretrained(tmp_path)
    assert model.state_dict().keys() == again.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[key]), key
    ignore = {"_name_or_path"}
    assert {k: v for k, v in again.config.to_dict().items() if k not in ignore} == {
        k: v for k, v in model.config.to_dict().items() if k not in ignore
    }
    prompt = processor.build_prompt([{"role": "user", "content": "<|image_pad|>\nhello"}])
    image = Image.new("RGB", (50, 50), "red")
    a = processor(text=prompt, images=[image])
    b = processor_again(text=prompt, images=[image])
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        assert torch.equal(model(**a).logits, again(**b).logits)


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_quantized_loading_generates_on_cpu(tiny_checkpoint, quantization, monkeypatch):
    import bitsandbytes as bnb

    # Take the packed CPU 4-bit kernel that CPUs with AVX512-BF16 use, whatever this CPU is: it cannot pack the tiny
    # model's 112-wide MLP, which must then stay unquantised rather than fail at the first forward.
    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: True)
    model, processor = load_pretrained(tiny_checkpoint, quantization=quantization)
    layer_class = bnb.nn.Linear8bitLt if quantization == "8bit" else bnb.nn.Linear4bit
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.moe_q_proj, layer_class)
    assert isinstance(layer.self_attn.o_proj, layer_class)
    mlp_class = layer_class if quantization == "8bit" else torch.nn.Linear
    assert type(layer.mlp.gate_proj) is mlp_class and type(layer.moe_mlp.down_proj) is mlp_class
    inputs = processor(
        text=processor.build_prompt([{"role": "user", "content": "<|image_pad|>\nhi"}]),
        images=[Image.new("RGB", (64, 32), "blue")],
    )
    ids = model.generate(**inputs, max_new_tokens=5, do_sample=False, eos_token_id=None)
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 5


def test_every_layer_of_the_default_model_fits_the_cpu_4bit_kernel():
    from model import EveConfig
    from model.loading import layers_unfit_for_cpu_4bit
    from recipes.default_model.recipe import MODEL

    assert layers_unfit_for_cpu_4bit(EveConfig(**MODEL, vocab_size=512, pad_token_id=0)) == []


def test_a_folder_that_is_not_an_eve_checkpoint_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not an EVEv2 checkpoint.*llama"):
        load_pretrained(tmp_path)


def test_a_hub_id_that_is_not_cached_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="BAAI/EVE-7B-HD-v2.0"):
        load_pretrained("BAAI/EVE-7B-HD-v2.0")


def test_a_hub_id_loads_from_the_hub_cache(tiny_in_hub_cache):
    """Offline, a repo id resolves to its snapshot in the Hub cache (the layout huggingface_hub writes)."""
    model, _ = load_pretrained(tiny_in_hub_cache)
    assert isinstance(model, EveForCausalLM)


def test_an_existing_vision_tower_folder_supplies_the_preprocessing(tiny_checkpoint, tmp_path):
    """Official checkpoints name a preprocessor folder; when it exists (here a res-96 variant), it is read."""
    import shutil

    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    tower = folder / "openai" / "eve-anyratio-res1600-patch16"
    tower.mkdir(parents=True)
    (tower / "preprocessor_config.json").write_text(
        json.dumps({"max_size": 96, "patch_stride": 8, "dense_stride": 2, "do_resize": False})
    )
    _, processor = load_pretrained(folder)
    assert processor.image_processor.max_size == 96
