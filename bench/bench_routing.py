"""Prefill and decode speed of the routed EVEv2 decoder against plain Qwen2 and the official dense blend.

All three run in this process on the same random weights (Qwen2 gets EVE's text weights), one after the other,
repeated and interleaved; the script prints median times and the ratios the project targets:

    prefill: EVE / Qwen2 <= 1.10, dense / EVE >= 1.7;  decode: EVE / Qwen2 <= 1.05

Usage: python bench/bench_routing.py [--hidden 512 --layers 4 --image 1600 --text 50 --repeats 5 --decode-steps 32]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model import EveConfig, EveForCausalLM
from model.compat import CACHE_NAME
from model.routing import DenseBlendRouter, ModalityRouter
from model.shared import num_image_tokens


def build_models(hidden: int, layers: int) -> tuple[EveForCausalLM, Qwen2ForCausalLM]:
    # Qwen2.5-7B proportions: MLP width 5.29 x hidden, 7 query heads per KV head (here 4), conv1 width 0.29 x hidden.
    sizes = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 37 // 7 // 64 * 64,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": max(1, hidden // 256),
        "vocab_size": 8192,
    }
    torch.manual_seed(0)
    eve = EveForCausalLM(EveConfig(**sizes, mm_hidden_size=hidden // 4, pad_token_id=0, eos_token_id=1)).eval()
    qwen = Qwen2ForCausalLM(Qwen2Config(**sizes, rope_parameters=dict(eve.config.rope_parameters))).eval()
    qwen.load_state_dict(eve.state_dict(), strict=False)
    return eve, qwen


def make_inputs(config: EveConfig, image_side: int, text_tokens: int) -> dict:
    n_image = num_image_tokens(image_side, image_side, config.patch_size)
    ids = torch.randint(10, config.vocab_size, (1, text_tokens + n_image))
    mm = torch.zeros_like(ids)
    mm[0, 35 : 35 + n_image] = 1  # system prompt, then the image, then the question
    ids[mm.bool()] = config.image_token_id
    return {"input_ids": ids, "mm_token_type_ids": mm, "pixel_values": [torch.randn(3, image_side, image_side)]}


@torch.no_grad()
def time_prefill(model, inputs: dict) -> float:
    start = time.perf_counter()
    model(**inputs, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - start


@torch.no_grad()
def time_decode(model, inputs: dict, steps: int) -> float:
    """Seconds per decode step with a KV cache the length of the prompt."""
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    cache, token = getattr(out, CACHE_NAME), out.logits[:, -1:].argmax(-1)
    length = inputs["input_ids"].shape[1]
    start = time.perf_counter()
    for step in range(steps):
        position = torch.tensor([[length + step]])
        out = model(input_ids=token, position_ids=position, use_cache=True, logits_to_keep=1, **{CACHE_NAME: cache})
        cache, token = getattr(out, CACHE_NAME), out.logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image", type=int, default=1600, help="square image side in pixels (1600 -> 2500 patches)")
    parser.add_argument("--text", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--decode-steps", type=int, default=32)
    args = parser.parse_args()

    eve, qwen = build_models(args.hidden, args.layers)
    inputs = make_inputs(eve.config, args.image, args.text)
    text_inputs = {"input_ids": inputs["input_ids"]}
    n = inputs["input_ids"].shape[1]
    print(
        f"hidden {args.hidden}, layers {args.layers}, {n} tokens ({int(inputs['mm_token_type_ids'].sum())} image), "
        f"{torch.get_num_threads()} threads"
    )

    def dense(fn, *a):
        eve.model.router_class = DenseBlendRouter
        try:
            return fn(eve, *a)
        finally:
            eve.model.router_class = ModalityRouter

    runs = {
        "prefill eve": lambda: time_prefill(eve, inputs),
        "prefill qwen2": lambda: time_prefill(qwen, text_inputs),
        "prefill dense": lambda: dense(time_prefill, inputs),
        "decode eve": lambda: time_decode(eve, inputs, args.decode_steps),
        "decode qwen2": lambda: time_decode(qwen, text_inputs, args.decode_steps),
    }
    for run in runs.values():  # warm-up
        run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so drift affects every variant alike
        for name, run in runs.items():
            times[name].append(run())
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, value in median.items():
        print(f"{name:14s} {value * 1000:9.2f} ms")
    print(f"prefill  EVE / Qwen2  = {median['prefill eve'] / median['prefill qwen2']:.3f}  (target <= 1.10)")
    print(f"prefill  dense / EVE  = {median['prefill dense'] / median['prefill eve']:.3f}  (target >= 1.7)")
    print(f"decode   EVE / Qwen2  = {median['decode eve'] / median['decode qwen2']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
