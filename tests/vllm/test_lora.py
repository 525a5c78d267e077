"""LoRA adapters on vLLM (`enable_lora=True`, one `LoRARequest` per request): greedy ids equal transformers + peft.

One engine and one batch on a checkpoint shaped like the default model: the base model and two different adapters
(trained-shape peft adapters on the text projections and the vision twins, random weights), with and without images,
the same image under the base and under each adapter (their cached prefixes must stay apart), and prefill in chunks
of 64 tokens, so that steps mix image rows, text rows and decode rows of different adapters.
"""

import gc
from pathlib import Path

import pytest
import torch

from tests.vllm.checkpoints import write_default_shaped, write_lora_adapter
from tests.vllm.engine_args import ENGINE_ARGS
from tests.vllm.test_parity import CONVERSATIONS

NEW_TOKENS = 12
# (conversation, adapter): None is the base model
ROWS = [
    ("one image", None),
    ("one image", "job-a"),
    ("one image", "job-b"),
    ("no image", "job-a"),
    ("two images", "job-b"),
    ("multi-turn", "job-a"),
    ("multi-turn", None),
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str | None, Path]:
    base = write_default_shaped(tmp_path_factory.mktemp("base"))
    return {
        None: base,
        "job-a": write_lora_adapter(base, tmp_path_factory.mktemp("job-a"), seed=1),
        "job-b": write_lora_adapter(base, tmp_path_factory.mktemp("job-b"), seed=2),
    }


def _reference(base: Path, adapter: Path | None, conversations: set[str]) -> dict[str, list[int]]:
    """Greedy ids from the transformers implementation, with the adapter through peft."""
    from peft import PeftModel

    from model import load_pretrained

    model, processor = load_pretrained(base, device="cpu", dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = {}
    for name in conversations:
        messages, images = CONVERSATIONS[name]
        inputs = processor(text=processor.build_prompt(messages), images=images)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        ids[name] = out[0, inputs["input_ids"].shape[1] :].tolist()
    return ids


def test_two_adapters_and_the_base_in_one_batch_match_transformers_and_peft(folders):
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from model import load_pretrained

    base = folders[None]
    _, processor = load_pretrained(base, device="cpu", dtype=torch.float32)
    adapters = {name: LoRARequest(name, i + 1, str(folders[name])) for i, name in enumerate(["job-a", "job-b"])}
    requests = []
    for conversation, _ in ROWS:
        messages, images = CONVERSATIONS[conversation]
        text = processor.build_prompt(messages)
        requests.append({"prompt": text, **({"multi_modal_data": {"image": images}} if images else {})})
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, stop_token_ids=processor.stop_token_ids)
    llm = LLM(
        model=str(base),
        **ENGINE_ARGS,
        enable_lora=True,
        max_lora_rank=8,
        max_loras=2,
        max_num_batched_tokens=64,
        enable_chunked_prefill=True,
    )
    try:
        lora_requests = [adapters[adapter] if adapter else None for _, adapter in ROWS]
        outputs = llm.generate(requests, params, lora_request=lora_requests)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    served = [list(out.outputs[0].token_ids) for out in outputs]

    expected = {
        adapter: _reference(base, adapter and folders[adapter], {c for c, a in ROWS if a == adapter} | {"one image"})
        for adapter in folders
    }
    for (conversation, adapter), ids in zip(ROWS, served):
        assert ids == expected[adapter][conversation], f"{adapter or 'base'}/{conversation}"
    # The adapters change the answers: each one's differs from the base's and from the other's.
    answers = {adapter: expected[adapter]["one image"] for adapter in folders}
    assert len({tuple(ids) for ids in answers.values()}) == 3, answers
