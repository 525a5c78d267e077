"""Peak memory of a server while eight clients send a large image at once: two decodes at a time against eight.

Each setting runs a server process of its own (`python app.py`, the shipped model), measured through /proc: its
peak resident memory (VmHWM, reset first) above its size before the burst. Prints both and their ratio.

    OMP_NUM_THREADS=1 python bench/bench_upload_memory.py                 # 36-megapixel images, 8 clients
    python bench/bench_upload_memory.py --side 5000 --clients 8 --repeat 3

Linux only (it reads /proc/<pid>/status and writes /proc/<pid>/clear_refs).
"""

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.helpers import MODEL, free_port, peak_rss_growth, start_server


def burst(url: str, image: Path, clients: int) -> None:
    def send(client: Client) -> None:
        client.predict(handle_file(str(image)), "OCR", "", 4, api_name="/answer")

    senders = [Client(url, verbose=False) for _ in range(clients)]
    threads = [threading.Thread(target=send, args=(client,)) for client in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(folder: Path, image: Path, decodes: int, clients: int) -> int:
    port = free_port()
    process = start_server(
        ["--model", MODEL, "--data-dir", str(folder / f"data-{decodes}"), "--max-concurrent-decodes", str(decodes)],
        port,
    )
    try:
        return peak_rss_growth(lambda: burst(f"http://127.0.0.1:{port}/", image, clients), process.pid)
    finally:
        process.kill()
        process.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=6000, help="image side in pixels (default 6000: 36 megapixels)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image = folder / "large.png"
        Image.new("RGB", (args.side, args.side), "gray").save(image)
        for run in range(args.repeat):
            bounded = measure(folder / f"run-{run}", image, 2, args.clients)
            unbounded = measure(folder / f"run-{run}", image, args.clients, args.clients)
            print(
                f"{args.clients} clients, {args.side}x{args.side} images: peak growth {bounded / 2**20:.0f} MiB with "
                f"2 decodes at a time, {unbounded / 2**20:.0f} MiB with {args.clients} "
                f"(ratio {bounded / unbounded:.2f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
