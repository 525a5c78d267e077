"""Fold a LoRA job's adapter into its base: a full checkpoint that loads wherever a checkpoint does.

    python -m model.train.merge runs/job-7/out merged/job-7

The adapter folder names its base (adapter_config.json); the merged folder holds the base's architecture with the
adapter added to its weights (`merge_and_unload`, in the base's full precision also for a QLoRA adapter), the
adapter's processor, the base's generation settings, and the files the app and training read beside a checkpoint
(tasks.json, the fine-tuning defaults). It answers greedily as base + adapter, and `load_pretrained`, the
transformers Auto classes and vLLM load it as they load the base.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..loading import adapter_base, load_pretrained, resolve_checkpoint
from .checkpoints import carry_base_files

logger = logging.getLogger(__name__)


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Writes base + adapter of `adapter_dir` as one full checkpoint into `output_dir`; returns `output_dir`.

    Raises:
        ValueError: `adapter_dir` is not a LoRA adapter folder, or `output_dir` is it.
    """
    adapter_dir, output_dir = Path(adapter_dir), Path(output_dir)
    base = adapter_base(adapter_dir) if adapter_dir.is_dir() else None
    if base is None:
        raise ValueError(
            f"{adapter_dir} is not a LoRA adapter folder (it needs adapter_config.json and no config.json)"
        )
    if output_dir.resolve() == adapter_dir.resolve():
        raise ValueError("Write the merged checkpoint into another folder than the adapter's")
    model, processor = load_pretrained(adapter_dir)  # unquantised: the adapter is folded into the weights
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    carry_base_files(adapter_dir, output_dir)
    carry_base_files(resolve_checkpoint(base), output_dir)
    logger.info("Merged %s into %s: a full checkpoint in %s", adapter_dir, base, output_dir)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.train.merge", description="Fold a LoRA adapter into its base as a full checkpoint."
    )
    parser.add_argument("adapter_dir", help="a lora or qlora job's output folder (adapter_config.json)")
    parser.add_argument("output_dir", help="where the merged checkpoint goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        merge_adapter(args.adapter_dir, args.output_dir)
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
