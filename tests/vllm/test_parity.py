"""Greedy token ids of EVEv2 on vLLM equal the transformers implementation's (model/modeling_eve.py).

Two random checkpoints with a dedicated `<|image_pad|>` token: the official layout at small width
(`EVEQwen2ForCausalLM`, sharded official key names) and one shaped like the project's default model; and the shipped
default model once it has that token (issue 13's retrained one). Each runs one
batch through one vLLM engine: no image, one image, two images, and a multi-turn conversation with an image in each
user turn (the second with prefill in chunks that split images). The prompt vLLM builds from text must also be the
library processor's, token for token. The default-model shape runs twice: eager, and compiled as the app's CPU
backend runs it (text-only steps through the compiled graph, chunks with image rows eagerly).
"""

import gc
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eve_app.serving.vllm_engine import CPU_COMPILATION
from tests.vllm.checkpoints import write_default_shaped, write_official
from tests.vllm.engine_args import ENGINE_ARGS

NEW_TOKENS = 12
TOP_LOGPROBS = 8


def _image(seed: int, width: int, height: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


CONVERSATIONS = {
    "no image": ([{"role": "user", "content": "describe the red circle"}], []),
    "one image": ([{"role": "user", "content": "<|image_pad|>\nWhat is written here?"}], [_image(1, 150, 100)]),
    "two images": (
        [{"role": "user", "content": "<|image_pad|>\n<|image_pad|>\nwhat is the cat and the dog"}],
        [_image(2, 90, 120), _image(3, 200, 64)],
    ),
    "multi-turn": (
        [
            {"role": "user", "content": "<|image_pad|>\nWhat is written here?"},
            {"role": "assistant", "content": "hello world"},
            {"role": "user", "content": "<|image_pad|>\nand here? describe the image"},
        ],
        [_image(4, 128, 128), _image(5, 64, 160)],
    ),
}


def _reference(folder: Path) -> dict[str, dict]:
    """Token ids and last-position log-probs from the transformers implementation, fp32, greedy."""
    from model import load_pretrained

    model, processor = load_pretrained(folder, device="cpu", dtype=torch.float32)
    results = {}
    for name, (messages, images) in CONVERSATIONS.items():
        inputs = processor(text=processor.build_prompt(messages), images=images)
        with torch.inference_mode():
            logits = model(**inputs).logits[0, -1]
            # Never generated on vLLM: the embedding's padding rows (suppressed by the library too) and the
            # placeholder, which would read back as an image position.
            logits[model.generation_config.suppress_tokens or []] = float("-inf")
            logits[processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")] = float("-inf")
            ids = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        results[name] = {
            "prompt": inputs["input_ids"][0].tolist(),
            "image_positions": inputs["mm_token_type_ids"][0].bool().tolist(),
            "ids": ids[0, inputs["input_ids"].shape[1] :].tolist(),
            "logprobs": torch.log_softmax(logits.float(), -1),
        }
    return results


def _vllm(folder: Path, **engine_args) -> dict[str, dict]:
    from vllm import LLM, SamplingParams

    from model.processing_eve import EveProcessor  # noqa: F401 -- same package vLLM loads through the plugin

    llm = LLM(model=str(folder), **{**ENGINE_ARGS, **engine_args})
    try:
        from model import load_pretrained

        _, processor = load_pretrained(folder, device="cpu", dtype=torch.float32)
        requests = []
        for messages, images in CONVERSATIONS.values():
            text = processor.build_prompt(messages)
            requests.append({"prompt": text, **({"multi_modal_data": {"image": images}} if images else {})})
        params = SamplingParams(
            temperature=0.0, max_tokens=NEW_TOKENS, logprobs=TOP_LOGPROBS, stop_token_ids=processor.stop_token_ids
        )
        outputs = llm.generate(requests, params)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    return {
        name: {
            "prompt": list(out.prompt_token_ids),
            "ids": list(out.outputs[0].token_ids),
            "logprobs": out.outputs[0].logprobs[0],
        }
        for name, out in zip(CONVERSATIONS, outputs)
    }


# The shipped default model; EVE_TEST_MODEL points the tests at another checkpoint (as in tests/e2e).
SHIPPED = Path(os.environ.get("EVE_TEST_MODEL", Path(__file__).resolve().parents[2] / "assets" / "eve-tiny"))


@pytest.fixture(scope="module", params=["official", "default-shaped", "compiled", "shipped"])
def both(request, tmp_path_factory):
    if request.param == "shipped":
        from transformers import AutoTokenizer

        if "<|image_pad|>" not in AutoTokenizer.from_pretrained(SHIPPED).get_vocab():
            pytest.skip("the shipped default model marks images with its pad id (retrained in issue 13)")
        return request.param, _reference(SHIPPED), _vllm(SHIPPED)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "official":
        write_official(folder)
        return request.param, _reference(folder), _vllm(folder)
    write_default_shaped(folder)
    # Chunked prefill in steps of 64 tokens: every 157-token image is split across chunks, so the image rows of a
    # chunk and the embeddings vLLM cached for the rest of the image must still line up.
    chunked = {"max_num_batched_tokens": 64, "enable_chunked_prefill": True}
    compiled = {"enforce_eager": False, "compilation_config": CPU_COMPILATION} if request.param == "compiled" else {}
    return request.param, _reference(folder), _vllm(folder, **chunked, **compiled)


@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_greedy_ids_and_logprobs_match_transformers(both, conversation):
    layout, reference, served = both
    ref, out = reference[conversation], served[conversation]
    # Same prompt: vLLM tokenised the text and expanded each <|image_pad|> to the image's 1 + h(w+1) tokens; the
    # library writes its own image id at those positions (0 for official configs), so only text ids are compared.
    assert len(out["prompt"]) == len(ref["prompt"])
    text_ids = [(a, b) for a, b, image in zip(out["prompt"], ref["prompt"], ref["image_positions"]) if not image]
    assert all(a == b for a, b in text_ids)
    assert out["ids"] == ref["ids"], f"{layout}/{conversation}: vLLM {out['ids']} != transformers {ref['ids']}"
    # Last prompt position: vLLM's top log-probs equal the transformers log-softmax there (fp32).
    for token_id, logprob in out["logprobs"].items():
        assert logprob.logprob == pytest.approx(float(ref["logprobs"][token_id]), abs=2e-4)
