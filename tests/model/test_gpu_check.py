"""The GPU check (bench/gpu_check.py) runs end to end on the CPU with tiny shapes, so it is known to work before a
GPU machine is lent for the few minutes it gets."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_part(gpu_check, tmp_path):
    out = tmp_path / "report.json"
    report = gpu_check.main(
        [
            "--shape",
            "tiny",
            "--device",
            "cpu",
            "--tokens",
            "6",
            "--parts",
            "bf16_vs_fp32,flash_vs_sdpa,load_memory,generation",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == report
    assert "error" not in report["build"]
    # bf16 against fp32 on the same weights: close, and the same next token almost everywhere.
    assert report["bf16_vs_fp32"]["ok"], report["bf16_vs_fp32"]
    assert report["bf16_vs_fp32"]["max_abs_diff"] < 0.1 * report["bf16_vs_fp32"]["reference_scale"]
    # CUDA-only parts say why they did not run rather than failing.
    assert "skipped" in report["flash_vs_sdpa"] and "skipped" in report["load_memory"]
    assert report["generation"]["new_tokens"] == 6 and report["generation"]["tokens_per_s"] > 0


def test_7b_shape_has_the_release_widths(gpu_check, tmp_path):
    """The full-width shape builds the 7B's layers (checked on the meta device: no memory)."""
    import torch

    from model import EveConfig, EveForCausalLM

    config = EveConfig.from_pretrained(str(gpu_check.SHIPPED))
    config.update({**gpu_check.SHAPES["7b"], "num_hidden_layers": 1, "layer_types": ["full_attention"]})
    with torch.device("meta"):
        model = EveForCausalLM(config)
    layer = model.model.layers[0]
    assert layer.self_attn.q_proj.weight.shape == (3584, 3584)
    assert layer.self_attn.k_proj.weight.shape == (512, 3584)
    assert layer.mlp.gate_proj.weight.shape == (18944, 3584)
    assert model.lm_head.weight.shape == (152064, 3584)
