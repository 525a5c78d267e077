"""What a person reads in the console: the app's first start (as `make run` starts it) and a fine-tuning job's log
carry no warnings that are not theirs to act on."""

import httpx

from tests.e2e.helpers import MODEL, free_port, start_server

# Messages a new user saw on every start or at the top of every job log (issue 29, item 20).
NOISE = [
    "gemm_4bit_forward from kernels-community",  # bitsandbytes trying to fetch a Hub kernel at import
    "You are using a model of type",  # AutoTokenizer reading config.json before eve-qwen2 is registered
    "num_cpu_threads_per_process",  # accelerate's notice of an option it was not passed
    "Traceback",
]


def noise_in(text: str, messages: list[str] = NOISE) -> list[str]:
    """The lines of `text` that carry one of `messages`."""
    return [line for line in text.splitlines() if any(message in line for message in messages)]


def test_the_first_start_prints_no_warnings(tmp_path):
    console = tmp_path / "console.txt"
    port = free_port()
    process = start_server(["--model", MODEL, "--data-dir", str(tmp_path / "data")], port, output=console)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = console.read_text(errors="replace")
    assert not noise_in(text), text[-3000:]
