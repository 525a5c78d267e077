"""Generation through transformers' generate: cache, batching, streaming, stopping, last-position logits."""

from threading import Thread

import torch
from PIL import Image
from transformers import TextIteratorStreamer

IMAGES = [Image.new("RGB", (80, 40), "red"), Image.new("RGB", (48, 64), "blue"), Image.new("RGB", (64, 64), "white")]
QUESTIONS = [
    "<|image_pad|>\nWhat is written here?",
    "<|image_pad|>\nDescribe the image in detail, please.",
    "<|image_pad|>\nHi",
]


def _prompt(processor, question):
    return processor.build_prompt([{"role": "user", "content": question}])


def _greedy(model, inputs, **kwargs):
    kwargs = {
        "max_new_tokens": 12,
        "do_sample": False,
        "repetition_penalty": 1.0,
        "suppress_tokens": None,
        "eos_token_id": None,
        **kwargs,
    }
    with torch.no_grad():
        return model.generate(**inputs, **kwargs)


def test_cached_generation_equals_uncached(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[0]), images=IMAGES[:1])
    cached = _greedy(model, inputs, use_cache=True)
    uncached = _greedy(model, inputs, use_cache=False)
    assert cached.shape[1] == inputs["input_ids"].shape[1] + 12
    assert torch.equal(cached, uncached)


def test_batched_generation_equals_one_by_one(tiny):
    model, processor = tiny
    prompts = [_prompt(processor, q) for q in QUESTIONS]
    batch = processor(text=prompts, images=IMAGES)
    batched = _greedy(model, batch)
    prompt_length = batch["input_ids"].shape[1]
    for i, (prompt, image) in enumerate(zip(prompts, IMAGES)):
        single = processor(text=prompt, images=[image])
        alone = _greedy(model, single)
        assert torch.equal(batched[i, prompt_length:], alone[0, single["input_ids"].shape[1] :]), f"prompt {i}"


def test_generation_computes_logits_for_the_last_position_only(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[0]), images=IMAGES[:1])
    rows = []
    hook = model.lm_head.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[1]))
    try:
        _greedy(model, inputs, max_new_tokens=3)
    finally:
        hook.remove()
    assert rows == [1, 1, 1]


def test_decode_steps_use_text_weights_only(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[0]), images=IMAGES[:1])
    calls = []
    hook = model.model.layers[0].moe_mlp.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    try:
        _greedy(model, inputs, max_new_tokens=4)
    finally:
        hook.remove()
    assert len(calls) == 1  # the prefill only; no decode step touches a vision weight


def test_streaming_yields_the_same_text_as_generate(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[1]), images=IMAGES[1:2])
    ids = _greedy(model, inputs)
    expected = processor.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = Thread(target=_greedy, args=(model, inputs), kwargs={"streamer": streamer})
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert len(pieces) > 1 and "".join(pieces).strip() == expected


def test_generation_stops_on_im_end(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[0]), images=IMAGES[:1])
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Make <|im_end|> the most likely first token (every other logit 0, its own the squared norm of the prompt's
    # last hidden state): generation must stop after that one token.
    with torch.no_grad():
        seen = []
        hook = model.lm_head.register_forward_pre_hook(lambda module, args: seen.append(args[0][0, -1].clone()))
        model(**inputs)
        hook.remove()
        last = seen[0]
        saved = model.lm_head.weight.clone()
        model.lm_head.weight.zero_()
        model.lm_head.weight[im_end] = last
        try:
            ids = model.generate(**inputs, max_new_tokens=10, do_sample=False)
        finally:
            model.lm_head.weight.copy_(saved)
    assert ids[0, inputs["input_ids"].shape[1] :].tolist() == [im_end]


def test_sampling_and_repetition_penalty_run_and_are_seeded(tiny):
    model, processor = tiny
    inputs = processor(text=_prompt(processor, QUESTIONS[2]), images=IMAGES[2:])
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(
            model.generate(
                **inputs,
                max_new_tokens=8,
                do_sample=True,
                temperature=0.9,
                top_p=0.9,
                repetition_penalty=1.2,
                eos_token_id=None,
            )
        )
    assert torch.equal(runs[0], runs[1])
    new = runs[0][0, inputs["input_ids"].shape[1] :]
    assert new.numel() == 8 and int(new.max()) < len(processor.tokenizer)  # padding rows are never sampled
