"""The vLLM tests run in their own environment (`make test-vllm`, .venv-vllm); elsewhere they are not collected."""

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# vLLM's CPU backend on a small machine: a 1 GiB KV cache (its default share of memory does not fit here).
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]
