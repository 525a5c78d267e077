"""The GPU check's vLLM part on the CPU with tiny shapes: greedy ids equal transformers and throughput is reported."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vllm_part_runs_on_tiny_shapes(monkeypatch):
    monkeypatch.setenv("EVE_VLLM_ENGINE_ARGS", '{"enforce_eager": true}')  # no compile time on the CPU
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    report = module.main(
        ["--shape", "tiny", "--device", "cpu", "--tokens", "6", "--concurrency", "2", "--parts", "vllm"]
    )
    vllm = report["vllm"]
    assert "error" not in vllm, vllm.get("traceback")
    assert vllm["greedy_equal"] == vllm["greedy_of"] == 4
    assert vllm["chats_2_tokens_per_s"] > 0
