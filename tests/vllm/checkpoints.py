"""Random EVEv2 checkpoints with a dedicated `<|image_pad|>` token, for the vLLM tests and benchmarks.

- `official`: the official on-disk layout (architecture `EVEQwen2ForCausalLM`, the official config fields and
  state-dict names, sharded safetensors; tests/conftest.py writes them) at a small width; like the Qwen2.5 tokenizer
  of the real checkpoint, the tokenizer has `<|image_pad|>` as an added token. config.json records its id and the
  tokenizer's length (`image_token_id`, `text_vocab_size`): vLLM builds the model from the config alone, and the real
  release, which records neither, gets Qwen2.5's figures (`model.vllm.placeholder_token_id`, `tokens_in_use`).
- `default`: shaped like the project's default model (`assets/eve-tiny`: width 192, 4 layers, 16-pixel patches,
  192-pixel images, 157 tokens an image), saved by the library with `image_token_id` pointing at `<|image_pad|>`.
"""

import json
from pathlib import Path

import torch

from tests.conftest import WORDS, official_config, official_state_dict

IMAGE_PAD = "<|image_pad|>"
# The official checkpoint's tokenizer carries Qwen2.5's ChatML template, which is not EVEv2's chat format.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
OFFICIAL_SIZES = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mm_hidden_size": 64,
}


def _tokenizer(vocab_size: int):
    from model.chat_template import get_template
    from model.train.tokenizer import train_tokenizer

    corpus = [get_template("qwen2").system, " ".join(WORDS), "USER: ASSISTANT: <|im_end|> What is in the image?"] * 20
    tokenizer = train_tokenizer(corpus, vocab_size=vocab_size)
    if IMAGE_PAD not in tokenizer.get_vocab():  # issue-13 tokenizers have it already
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PAD]})
    return tokenizer


def write_official(folder: Path, sizes: dict | None = None, image_max_size: int = 64, seed: int = 0) -> Path:
    """Official layout at small width; `sizes` overrides OFFICIAL_SIZES, `image_max_size` sets the image tokens."""
    from huggingface_hub import save_torch_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(320)
    tokenizer.chat_template = CHATML  # as in the official checkpoint: the server must not use it
    tokenizer.save_pretrained(str(folder))
    config = official_config(vocab_size=len(tokenizer) + 16)
    config.update(
        {
            **OFFICIAL_SIZES,
            **(sizes or {}),
            "image_max_size": image_max_size,
            "max_position_embeddings": 8192,
            "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
            "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_PAD),
            "text_vocab_size": len(tokenizer),
        }
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_torch_state_dict(official_state_dict(config, seed), str(folder), max_shard_size=2_000_000)
    return folder


def write_default_shaped(folder: Path, seed: int = 0) -> Path:
    """The default model's sizes and settings, random weights, saved by the library (`EveForCausalLM`)."""
    from model import EveConfig, EveForCausalLM
    from model.image_processing_eve import EveImageProcessor
    from model.processing_eve import EveProcessor

    tokenizer = _tokenizer(500)
    config = EveConfig(
        vocab_size=512,
        hidden_size=192,
        intermediate_size=576,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        mm_hidden_size=128,
        patch_stride=8,
        dense_stride=2,
        image_max_size=192,
        image_mean=[1.0, 1.0, 1.0],
        image_std=[0.5, 0.5, 0.5],
        mm_vision_tower=None,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_PAD),
        text_vocab_size=len(tokenizer),
    )
    torch.manual_seed(seed)
    model = EveForCausalLM(config).float()
    with torch.no_grad():  # larger than the init's 0.02 so that greedy answers vary with the input
        for name, param in model.named_parameters():
            if param.dim() > 1 and "patch_embedding" not in name:
                param.normal_(0.0, 0.08)
    model.save_pretrained(str(folder))
    EveProcessor(
        tokenizer, EveImageProcessor.from_config(config), image_token_id=config.image_token_id
    ).save_pretrained(folder)
    return folder


# peft matches a target by the module name's last part: gate/up/down_proj cover the text and the vision MLP alike.
LORA_TARGETS = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "moe_q_proj",
    "moe_k_proj",
    "moe_v_proj",
    "moe_o_proj",
]


def write_lora_adapter(base: Path, folder: Path, seed: int, rank: int = 8) -> Path:
    """A peft LoRA adapter for `base` on the text projections and their vision twins, saved as peft saves one. Its A
    and B are random (peft's `init_lora_weights=False`), not zero as at the start of training, so that it changes
    greedy answers."""
    from peft import LoraConfig, get_peft_model

    from model import load_pretrained

    model, _ = load_pretrained(base, device="cpu", dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(folder))
    return folder


def transformers_engine(checkpoint: Path, adapter: Path | None = None):
    """The app's transformers backend on `checkpoint` in fp32, with the LoRA adapter on through peft if given: the
    reference answer for the vLLM backends."""
    from eve_app.serving.transformers_engine import TransformersEngine

    engine = TransformersEngine.load(str(checkpoint), dtype="float32")
    if adapter is not None:
        from peft import PeftModel

        engine.model = PeftModel.from_pretrained(engine.model, str(adapter))
    return engine
