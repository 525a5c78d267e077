"""The routed EVEv2 forward: official keys, parity with the dense blend and with plain Qwen2, routing cost."""

import torch
from PIL import Image
from transformers import Qwen2Config, Qwen2ForCausalLM

from model import EveConfig, EveForCausalLM
from model.routing import DenseBlendRouter, ModalityRouter


def _inputs(processor, sizes=((80, 40), (40, 72))):
    images = [Image.new("RGB", size, color) for size, color in zip(sizes, ["red", "navy"])]
    placeholders = "".join("<|image_pad|>" for _ in images)
    prompt = processor.build_prompt([{"role": "user", "content": f"{placeholders}\nWhat is written here?"}])
    return processor(text=prompt, images=images)


def _with_router(model, router_class, **inputs):
    model.model.router_class = router_class
    try:
        with torch.no_grad():
            return model(**inputs).logits
    finally:
        model.model.router_class = ModalityRouter


def test_routed_forward_equals_dense_blend_reference(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    routed = _with_router(model, ModalityRouter, **inputs)
    dense = _with_router(model, DenseBlendRouter, **inputs)
    assert routed.shape == (1, inputs["input_ids"].shape[1], model.config.vocab_size)
    torch.testing.assert_close(routed, dense, atol=1e-5, rtol=1e-5)


def test_routed_forward_equals_dense_blend_for_a_padded_batch(tiny):
    model, processor = tiny
    prompts = [
        processor.build_prompt([{"role": "user", "content": "<|image_pad|>\nDescribe the image."}]),
        processor.build_prompt([{"role": "user", "content": "hello <|image_pad|> world <|image_pad|>"}]),
    ]
    images = [Image.new("RGB", (64, 64), "green"), Image.new("RGB", (30, 90), "blue"), Image.new("RGB", (90, 30))]
    inputs = processor(text=prompts, images=images)
    assert inputs["attention_mask"][0, 0] == 0  # left padding happened
    torch.testing.assert_close(
        _with_router(model, ModalityRouter, **inputs),
        _with_router(model, DenseBlendRouter, **inputs),
        atol=1e-5,
        rtol=1e-5,
    )


def test_each_weight_set_sees_only_its_own_tokens(tiny):
    model, processor = tiny
    inputs = _inputs(processor)
    rows = {}
    layer = model.model.layers[0]

    def count_rows(name):
        def hook(module, args, output):
            rows[name] = args[0].shape[:-1].numel()

        return hook

    hooks = [
        module.register_forward_hook(count_rows(name))
        for name, module in [
            ("text", layer.mlp),
            ("vision", layer.moe_mlp),
            ("text_q", layer.self_attn.q_proj),
            ("vision_q", layer.self_attn.moe_q_proj),
        ]
    ]
    with torch.no_grad():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    n_image = int(inputs["mm_token_type_ids"].sum())
    n_text = inputs["input_ids"].numel() - n_image
    assert rows == {"text": n_text, "vision": n_image, "text_q": n_text, "vision_q": n_image}


def test_patch_embedding_layout_is_class_then_rows_each_ending_with_split(tiny):
    model, _ = tiny
    tower = model.model.vision_tower
    pixels = torch.randn(3, 32, 48)  # 2 x 3 patches of 16 px
    with torch.no_grad():
        tokens = tower([pixels])[0]
        grid = tower.patch_embedding(pixels[None])[0]  # [C, 2, 3]
    assert tokens.shape == (1 + 2 * (3 + 1), model.config.hidden_size)
    torch.testing.assert_close(tokens[0], tower.class_embedding)
    for row in range(2):
        start = 1 + row * 4
        torch.testing.assert_close(tokens[start : start + 3], grid[:, row, :].T)
        torch.testing.assert_close(tokens[start + 3], tower.split_embedding)


def test_text_only_forward_is_exactly_qwen2(tiny_checkpoint_no_moe, tiny_checkpoint):
    """Text tokens go through text weights only: a text prompt gives plain Qwen2's logits from the same weights."""
    model = EveForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32)
    config = model.config
    qwen = Qwen2ForCausalLM(
        Qwen2Config(
            **{
                k: getattr(config, k)
                for k in (
                    "vocab_size",
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "rms_norm_eps",
                )
            },
            rope_parameters=config.rope_parameters,
        )
    )
    missing, unexpected = qwen.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all("moe" in k or "vision_tower" in k for k in unexpected)
    ids = torch.randint(3, 300, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, qwen(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_without_vision_twins_loads_and_runs(tiny_checkpoint_no_moe):
    from model import load_pretrained

    model, processor = load_pretrained(tiny_checkpoint_no_moe)
    assert not any("moe" in name for name in model.state_dict())
    inputs = _inputs(processor)
    dense = _with_router(model, DenseBlendRouter, **inputs)
    torch.testing.assert_close(_with_router(model, ModalityRouter, **inputs), dense, atol=1e-5, rtol=1e-5)
    ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert ids.shape[1] <= inputs["input_ids"].shape[1] + 4


def test_default_config_is_the_official_7b():
    config = EveConfig()
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (3584, 18944, 28)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (28, 4, 152064)
    assert config.rope_parameters["rope_theta"] == 1e6 and config.mm_hidden_size == 1024
    assert config.patch_size == 32 and config.image_max_size == 1600 and config.moe_part == "layernorm-self_attn-mlp"
    with torch.device("meta"):
        model = EveForCausalLM(config)
    assert len(model.state_dict()) == 681
    assert abs(sum(p.numel() for p in model.parameters()) / 1e9 - 14.16) < 0.01


def test_a_prompt_of_image_tokens_only_runs(tiny):
    """The plain pre-training format's prompt is a lone image: every row is a vision row."""
    model, processor = tiny
    inputs = processor(text="<|image_pad|>", images=[Image.new("RGB", (32, 32), "red")])
    assert inputs["mm_token_type_ids"].all()
    routed = _with_router(model, ModalityRouter, **inputs)
    torch.testing.assert_close(routed, _with_router(model, DenseBlendRouter, **inputs), atol=1e-5, rtol=1e-5)
