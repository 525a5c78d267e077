"""Entry point: `python -m model.train ...` (one process) or `accelerate launch [--config_file ...] -m model.train ...`.

    # stage 3 fine-tuning of a checkpoint on LLaVA-format data
    python -m model.train --base ckpt --stage 3 --data data.json --output-dir out/sft --lr 2e-5 --epochs 1
    # a small model from scratch on streamed synthetic data, text warm-up first
    python -m model.train --from-scratch small.json --tokenizer tok --stage warmup --synthetic ocr,scene \\
        --max-steps 500 --output-dir out/warmup --lr 3e-3 --batch-size 32
    # two CPU processes (DDP over gloo)
    accelerate launch --config_file configs/accelerate/cpu_ddp.yaml -m model.train --base ckpt --data d.json ...

Exit status 0 when the run finished or was stopped by SIGTERM/SIGINT (a checkpoint is saved; rerun the same command
to resume), 2 for invalid arguments.
"""

import logging
import os
import sys
from collections.abc import Sequence

import torch

from ..shared import leave_out_bitsandbytes
from .args import parse_args


def configure_logging() -> None:
    """INFO on the main process, warnings only on the others (the rank is known from the launcher's environment)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def configure_threads() -> None:
    """OMP_NUM_THREADS (set by `accelerate launch` to cores per process) decides the CPU threads torch uses."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))


def main(argv: Sequence[str] | None = None, own_process: bool = False) -> int:
    """Runs one training stage; `own_process`: this process does nothing else (the command line), so libraries the
    run does not use can be kept out of it."""
    args = parse_args(argv)
    if own_process and args.method != "qlora":  # only QLoRA's 4-bit base needs bitsandbytes
        leave_out_bitsandbytes()
    from .loop import train  # transformers and peft: imported after the line above

    configure_logging()
    configure_threads()
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(own_process=True))
