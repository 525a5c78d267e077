"""The GPU check: what a lent GPU machine must confirm about the CUDA paths, in one run of a few minutes, offline.

`make gpu-check` (or `python bench/gpu_check.py --out gpu_check.json`) builds an EVE-7B-shaped checkpoint with random
weights (the real widths, vocabulary and patch embedding, a few layers, so it loads in seconds and fits any GPU) and
reports as JSON:

- `bf16_vs_fp32`: bf16 logits against an fp32 reference of the same weights (max |diff|, top-1 agreement);
- `flash_vs_sdpa`: flash-attn 2 against SDPA in bf16, where flash-attn imports;
- `load_memory`: peak GPU memory while loading in bf16, 8-bit and 4-bit, against the weights the app's
  automatic precision choice expects (model/precision.py);
- `generation`: transformers' greedy decode, tokens/s for one chat;
- `vllm`: vLLM with compilation and CUDA graphs: greedy ids against transformers in bf16, and tokens/s with 8 and 32
  chats at once, each with its own image.

Each part runs on its own; a part that fails records its error and the rest go on. `--shape tiny --device cpu` runs
the same code on a 2-core CPU in seconds (the test suite does; vLLM's part in its own environment).
"""

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import EveConfig, EveForCausalLM, load_pretrained
from model.image_processing_eve import EveImageProcessor
from model.processing_eve import EveProcessor
from model.shared import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "assets" / "eve-tiny"  # its tokenizer and chat template serve every shape
GIB = 1 << 30

# EVE-7B-HD-v2.0's widths (Qwen2.5-7B; docs in shared/eve_v2_spec.md) at a 448-pixel image area: 197 image tokens.
SHAPES: dict[str, dict[str, Any]] = {
    "7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "mm_hidden_size": 1024,
        "patch_stride": 16,
        "dense_stride": 2,
        "image_max_size": 448,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "max_position_embeddings": 4096,
    },
    "tiny": {
        "hidden_size": 128,  # head_dim 32: vLLM's CPU attention has no kernel for 16
        "intermediate_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "mm_hidden_size": 32,
        "patch_stride": 8,
        "dense_stride": 2,
        "image_max_size": 96,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "max_position_embeddings": 2048,
    },
}
QUESTIONS = ["What is written here?", "describe the image", "what is the red circle"]


def build_checkpoint(folder: Path, shape: str, layers: int, device: str, seed: int = 0) -> Path:
    """Random weights at `shape`'s widths, saved in bf16 with the shipped model's tokenizer and chat template."""
    from transformers import AutoTokenizer

    config = EveConfig.from_pretrained(str(SHIPPED))
    config.update({**SHAPES[shape], "num_hidden_layers": layers, "layer_types": ["full_attention"] * layers})
    torch.manual_seed(seed)
    with torch.device(device):
        model = EveForCausalLM(config)
    with torch.no_grad():  # wider than the init's 0.02 so greedy answers depend on the input
        for name, param in model.named_parameters():
            if param.dim() > 1 and "patch_embedding" not in name:
                param.normal_(0.0, 0.02 if shape == "7b" else 0.08)
    model.to(torch.bfloat16).save_pretrained(str(folder))
    del model
    tokenizer = AutoTokenizer.from_pretrained(str(SHIPPED))
    EveProcessor(
        tokenizer, EveImageProcessor.from_config(config), image_token_id=config.image_token_id
    ).save_pretrained(folder)
    shutil.copy(SHIPPED / "chat_template.jinja", folder / "chat_template.jinja")
    shutil.copy(SHIPPED / "generation_config.json", folder / "generation_config.json")
    return folder


def image(seed: int, side: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def conversation(seed: int, side: int) -> tuple[list[dict], list[Image.Image]]:
    return [{"role": "user", "content": "<|image_pad|>\n" + QUESTIONS[seed % len(QUESTIONS)]}], [image(seed, side)]


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def last_logits(model: EveForCausalLM, processor: EveProcessor, side: int) -> torch.Tensor:
    messages, images = conversation(0, side)
    inputs = processor(text=processor.build_prompt(messages), images=images).to(model.device)
    with torch.inference_mode():
        return model(**inputs).logits[0].float().cpu()


def compare_logits(reference: torch.Tensor, other: torch.Tensor) -> dict:
    return {
        "max_abs_diff": float((reference - other).abs().max()),
        "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).float().mean()),
        "reference_scale": float(reference.abs().max()),
    }


def part_bf16_vs_fp32(folder: Path, device: str, side: int) -> dict:
    model, processor = load_pretrained(folder, device=device, dtype=torch.float32)
    reference = last_logits(model, processor, side)
    del model
    free_memory()
    model, processor = load_pretrained(folder, device=device, dtype=torch.bfloat16)
    result = compare_logits(reference, last_logits(model, processor, side))
    return {**result, "ok": result["top1_agreement"] >= 0.9}


def part_flash_vs_sdpa(folder: Path, device: str, side: int) -> dict:
    from transformers.utils import is_flash_attn_2_available

    if not (device.startswith("cuda") and is_flash_attn_2_available()):
        return {"skipped": "flash-attn 2 is not installed or the device is not CUDA"}
    logits = {}
    for implementation in ("sdpa", "flash_attention_2"):
        model, processor = load_pretrained(
            folder, device=device, dtype=torch.bfloat16, attn_implementation=implementation
        )
        logits[implementation] = last_logits(model, processor, side)
        del model
        free_memory()
    result = compare_logits(logits["sdpa"], logits["flash_attention_2"])
    return {**result, "ok": result["top1_agreement"] >= 0.9}


def expected_weight_bytes(model: EveForCausalLM, quantization: str | None) -> int:
    """The weights the app's precision choice (model/precision.py) expects this checkpoint to take."""
    from model.precision import weight_bytes

    return weight_bytes(model.config.to_dict(), quantization)


def part_load_memory(folder: Path, device: str) -> dict:
    if not device.startswith("cuda"):
        return {"skipped": "peak memory is read from the CUDA allocator"}
    results = {}
    for quantization in (None, "8bit", "4bit"):
        free_memory()
        before = torch.cuda.memory_allocated()
        try:
            model, _ = load_pretrained(folder, device=device, dtype=torch.bfloat16, quantization=quantization)
        except Exception as error:  # noqa: BLE001 -- bitsandbytes missing or broken: the other precisions still count
            results[quantization or "bf16"] = {"error": f"{type(error).__name__}: {error}"}
            continue
        peak = torch.cuda.max_memory_allocated() - before
        expected = expected_weight_bytes(model, quantization)
        results[quantization or "bf16"] = {
            "peak_gib": round(peak / GIB, 3),
            "expected_gib": round(expected / GIB, 3),
            "peak_over_expected": round(peak / expected, 3),
        }
        del model
    return results


def part_generation(folder: Path, device: str, side: int, tokens: int) -> dict:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, processor = load_pretrained(folder, device=device, dtype=dtype)
    messages, images = conversation(1, side)
    inputs = processor(text=processor.build_prompt(messages), images=images).to(model.device)
    settings = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens}
    with torch.inference_mode():
        model.generate(**inputs, **{**settings, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        start = time.perf_counter()
        out = model.generate(**inputs, **settings)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    new = out.shape[1] - inputs["input_ids"].shape[1]
    return {"new_tokens": int(new), "seconds": round(seconds, 3), "tokens_per_s": round(new / seconds, 1)}


def transformers_greedy(folder: Path, device: str, side: int, chats: int, tokens: int) -> list[list[int]]:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model, processor = load_pretrained(folder, device=device, dtype=dtype)
    ids = []
    for seed in range(chats):
        messages, images = conversation(seed, side)
        inputs = processor(text=processor.build_prompt(messages), images=images).to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=tokens)
        ids.append(out[0, inputs["input_ids"].shape[1] :].tolist())
    del model
    free_memory()
    return ids


def part_vllm(folder: Path, device: str, side: int, tokens: int, concurrency: list[int]) -> dict:
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return {"skipped": "vLLM is not installed in this environment"}
    from eve_app.serving.vllm_engine import engine_args

    expected = transformers_greedy(folder, device, side, chats=4, tokens=tokens)
    args = engine_args(str(folder), device, None)
    args.update(max_model_len=2048, max_num_seqs=max(concurrency))
    if device.startswith("cuda"):
        args.update(enforce_eager=False, gpu_memory_utilization=0.5)  # compilation and CUDA graphs
    args.pop("disable_log_stats", None)
    _, processor = load_pretrained(folder, device="cpu", dtype=torch.float32)
    start = time.perf_counter()
    llm = LLM(**args)
    result: dict[str, Any] = {"engine_start_s": round(time.perf_counter() - start, 1)}
    try:

        def requests(n: int) -> list[dict]:
            batch = []
            for seed in range(n):
                messages, images = conversation(seed, side)
                text = processor.build_prompt(messages)
                batch.append({"prompt": text, "multi_modal_data": {"image": images}})
            return batch

        greedy = SamplingParams(temperature=0.0, max_tokens=tokens, stop_token_ids=processor.stop_token_ids)
        served = [list(out.outputs[0].token_ids) for out in llm.generate(requests(len(expected)), greedy)]
        result["greedy_equal"] = sum(a == b for a, b in zip(served, expected))
        result["greedy_of"] = len(expected)
        fixed = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        for chats in concurrency:
            batch = requests(chats)
            start = time.perf_counter()
            outputs = llm.generate(batch, fixed)
            seconds = time.perf_counter() - start
            generated = sum(len(out.outputs[0].token_ids) for out in outputs)
            result[f"chats_{chats}_tokens_per_s"] = round(generated / seconds, 1)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        free_memory()
    return result


def run_part(name: str, report: dict, function: Callable[[], dict]) -> None:
    start = time.perf_counter()
    try:
        report[name] = function()
    except Exception as error:  # noqa: BLE001 -- one broken path must not hide the others' figures
        report[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    report[name]["seconds"] = round(time.perf_counter() - start, 1)
    free_memory()
    print(json.dumps({name: report[name]}), flush=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer")
    parser.add_argument("--concurrency", default="8,32", help="chats at once for vLLM's throughput")
    parser.add_argument(
        "--parts", default="bf16_vs_fp32,flash_vs_sdpa,load_memory,generation,vllm", help="comma-separated"
    )
    parser.add_argument("--out", type=Path, help="write the report here as JSON too")
    args = parser.parse_args(argv)
    side = SHAPES[args.shape]["image_max_size"]
    parts = set(args.parts.split(","))
    report: dict[str, Any] = {
        "shape": args.shape,
        "layers": args.layers,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "eve-7b-shaped"
        run_part(
            "build", report, lambda: {"folder": str(build_checkpoint(folder, args.shape, args.layers, args.device))}
        )
        steps: dict[str, Callable[[], dict]] = {
            "bf16_vs_fp32": lambda: part_bf16_vs_fp32(folder, args.device, side),
            "flash_vs_sdpa": lambda: part_flash_vs_sdpa(folder, args.device, side),
            "load_memory": lambda: part_load_memory(folder, args.device),
            "generation": lambda: part_generation(folder, args.device, side, args.tokens),
            "vllm": lambda: part_vllm(
                folder, args.device, side, args.tokens, [int(n) for n in args.concurrency.split(",")]
            ),
        }
        for name, step in steps.items():
            if name in parts:
                run_part(name, report, step)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
