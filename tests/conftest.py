"""Shared fixtures: a tiny checkpoint written in the official EVEv2 on-disk layout, independently of our model code.

The config.json carries the fields the official training script writes (including an `mm_vision_tower` folder that
does not exist and the old top-level `rope_theta`), the weights use the state-dict key names of the spec written out
by hand here, sharded with an index file like the Hub checkpoint, and the tokenizer is a small BPE.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import save_torch_state_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The apps the tests start refuse uploads that would leave under 512 MiB free (the default floor). The tests upload
# kilobytes, and a CI machine may hold less than that once it has built three environments: there they would refuse
# every image. The floor's own tests set theirs (tests/e2e/test_public_safety.py).
os.environ.setdefault("EVE_MIN_FREE_DISK_MB", "0")
torch.set_num_threads(2)

TINY = {
    "hidden_size": 64,
    "intermediate_size": 112,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mm_hidden_size": 48,
}
# Small images: 16 px patches (8 x 2), images rescaled to an area of 64 x 64.
TINY_IMAGE = {"image_max_size": 64, "patch_stride": 8, "dense_stride": 2}
WORDS = [
    "the",
    "a",
    "red",
    "blue",
    "green",
    "circle",
    "square",
    "cat",
    "dog",
    "sign",
    "reads",
    "hello",
    "world",
    "what",
    "is",
    "written",
    "here",
    "describe",
    "image",
]


# The slow tier (`make test-fast` leaves it out, `make test` runs it): whole folders whose every test starts a server,
# a browser or a vLLM engine, or kills and restarts the app. Single slow tests elsewhere (training runs) carry
# `@pytest.mark.slow` themselves.
SLOW_FOLDERS = ("e2e", "vllm")
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(TESTS) and item.path.relative_to(TESTS).parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


def official_config(vocab_size: int, add_moe: bool = True) -> dict:
    """config.json as the official stage-3 training writes it, at tiny sizes."""
    config = {
        "_name_or_path": "checkpoints/eve-7b-hd-v2.0-stage2",
        "architectures": ["EVEQwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 4096,
        "max_window_layers": 28,
        "model_type": "eve-qwen2",
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        "pad_token_id": 0,
        "mm_vision_tower": "openai/eve-anyratio-res1600-patch16",
        "mm_hidden_size": TINY["mm_hidden_size"],
        "tune_VE": True,
        "tune_LLM": True,
        "tune_MOE": True,
        "vision_tower_lr": 1e-05,
        **({"add_moe": True, "moe_part": "layernorm-self_attn-mlp"} if add_moe else {"add_moe": False}),
        **TINY,
        **TINY_IMAGE,
    }
    return config


def official_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the exact official key names and shapes (spec sections 2.1 and 3.1)."""
    gen = torch.Generator().manual_seed(seed)
    d, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head_dim = d // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    p, ds, mm = config["patch_stride"], config["dense_stride"], config["mm_hidden_size"]

    def rand(*shape, std=0.1):
        return torch.randn(*shape, generator=gen) * std

    def norm():
        return 1.0 + rand(d)

    shapes = {
        "model.embed_tokens.weight": rand(vocab, d, std=0.5),
        "model.norm.weight": norm(),
        "lm_head.weight": rand(vocab, d, std=0.5),
        "model.vision_tower.patch_embedding.0.weight": rand(mm, 3, p, p),
        "model.vision_tower.patch_embedding.0.bias": rand(mm),
        "model.vision_tower.patch_embedding.2.weight": rand(d, mm, ds, ds),
        "model.vision_tower.patch_embedding.2.bias": rand(d),
        "model.vision_tower.class_embedding": rand(d, std=1.0),
        "model.vision_tower.split_embedding": rand(d, std=1.0),
    }
    prefixes = [""] + (["moe_"] if config.get("add_moe") else [])
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        for moe in prefixes:
            shapes.update(
                {
                    f"{layer}self_attn.{moe}q_proj.weight": rand(d, d),
                    f"{layer}self_attn.{moe}q_proj.bias": rand(d),
                    f"{layer}self_attn.{moe}k_proj.weight": rand(kv, d),
                    f"{layer}self_attn.{moe}k_proj.bias": rand(kv),
                    f"{layer}self_attn.{moe}v_proj.weight": rand(kv, d),
                    f"{layer}self_attn.{moe}v_proj.bias": rand(kv),
                    f"{layer}self_attn.{moe}o_proj.weight": rand(d, d),
                    f"{layer}{moe}mlp.gate_proj.weight": rand(inter, d),
                    f"{layer}{moe}mlp.up_proj.weight": rand(inter, d),
                    f"{layer}{moe}mlp.down_proj.weight": rand(d, inter),
                    f"{layer}{moe}input_layernorm.weight": norm(),
                    f"{layer}{moe}post_attention_layernorm.weight": norm(),
                }
            )
    return shapes


def write_official_checkpoint(folder: Path, add_moe: bool = True, seed: int = 0, endless: bool = False) -> Path:
    """Random weights in the official 7B layout at tiny sizes. `endless`: the head's rows of the special tokens are
    zero, so greedy decoding never picks a stop token and every answer runs to its max_new_tokens."""
    from model.chat_template import get_template
    from model.train.tokenizer import train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = [get_template("qwen2").system, " ".join(WORDS), "USER: ASSISTANT: <|im_end|>"] * 20
    tokenizer = train_tokenizer(corpus, vocab_size=320)
    tokenizer.save_pretrained(str(folder))
    # Like the 7B checkpoint, the embedding has unused padding rows beyond the tokenizer's vocabulary.
    config = official_config(vocab_size=len(tokenizer) + 16, add_moe=add_moe)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generation = {
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "repetition_penalty": 1.05,
        "eos_token_id": [2, 0],
        "pad_token_id": 0,
        "bos_token_id": 0,
    }
    (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))
    state_dict = official_state_dict(config, seed)
    if endless:  # a zero logit is never the largest of hundreds of random ones
        state_dict["lm_head.weight"][tokenizer.all_special_ids] = 0.0
    # Sharded with model.safetensors.index.json, as on the Hub.
    save_torch_state_dict(state_dict, str(folder), max_shard_size=200_000)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_official_checkpoint(tmp_path_factory.mktemp("eve-tiny-official"))


@pytest.fixture(scope="session")
def endless_checkpoint(tmp_path_factory) -> Path:
    return write_official_checkpoint(tmp_path_factory.mktemp("eve-tiny-endless"), endless=True)


@pytest.fixture(scope="session")
def tiny_checkpoint_no_moe(tmp_path_factory) -> Path:
    return write_official_checkpoint(tmp_path_factory.mktemp("eve-tiny-no-moe"), add_moe=False)


@pytest.fixture
def tiny_in_hub_cache(tiny_checkpoint, monkeypatch, tmp_path) -> str:
    """A Hub cache (the layout huggingface_hub writes) holding the tiny checkpoint as `BAAI/EVE-7B-HD-v2.0`; returns
    that repo id. Offline, loaders must find it there."""
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "models--BAAI--EVE-7B-HD-v2.0"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in tiny_checkpoint.iterdir():
        (snapshot / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    return "BAAI/EVE-7B-HD-v2.0"


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    """(model, processor) loaded from the official-layout tiny checkpoint, fp32 on CPU."""
    from model import load_pretrained

    return load_pretrained(tiny_checkpoint, device="cpu", dtype=torch.float32)
