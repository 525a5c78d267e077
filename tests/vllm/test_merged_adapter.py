"""A LoRA adapter merged by `python -m model.train.merge` serves on vLLM as any checkpoint, with the greedy answers of
transformers + peft with the adapter unmerged.

The adapter is made, not trained: peft's LoRA on the shipped model's text and twin projections with random B
matrices (`init_lora_weights=False`), so that it changes the answers as a trained one does.
"""

import gc

import numpy as np
import torch
from PIL import Image

from model import load_pretrained
from model.shared import PROJECT_ROOT
from model.train.merge import merge_adapter
from tests.vllm.engine_args import ENGINE_ARGS

SHIPPED = PROJECT_ROOT / "assets" / "eve-tiny"
QUESTION = "<|image_pad|>\nRead the text in the image."
NEW_TOKENS = 10


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (96, 384, 3), dtype=np.uint8)) for _ in range(3)]


def _adapter(folder) -> None:
    from peft import LoraConfig, get_peft_model

    model, _ = load_pretrained(SHIPPED)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    targets += [f"moe_{name}" for name in targets[:4]]
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    adapted = get_peft_model(model, config)
    for config in adapted.peft_config.values():
        config.base_model_name_or_path = str(SHIPPED)
    adapted.save_pretrained(folder)


def test_a_merged_adapter_answers_on_vllm_as_transformers_with_the_adapter(tmp_path):
    from peft import PeftModel
    from vllm import LLM, SamplingParams

    _adapter(tmp_path / "adapter")
    merged = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    base, processor = load_pretrained(SHIPPED)
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    prompt = processor.build_prompt([{"role": "user", "content": QUESTION}])
    expected = []
    for image in _images():
        inputs = processor(text=prompt, images=[image])
        with torch.inference_mode():
            ids = adapted.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        expected.append(ids[0, inputs["input_ids"].shape[1] :].tolist())
    plain, _ = load_pretrained(SHIPPED)
    inputs = processor(text=prompt, images=[_images()[0]])
    with torch.inference_mode():
        base_ids = plain.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    assert base_ids[0, inputs["input_ids"].shape[1] :].tolist() != expected[0]  # the adapter changes the answer

    llm = LLM(model=str(merged), **ENGINE_ARGS)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, stop_token_ids=processor.stop_token_ids)
        text = prompt
        outputs = llm.generate([{"prompt": text, "multi_modal_data": {"image": image}} for image in _images()], params)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    served = [list(out.outputs[0].token_ids) for out in outputs]
    assert served == expected
