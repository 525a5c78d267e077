"""Recipe of the project's small default EVEv2 (`assets/eve-tiny`), trained from scratch on synthetic images.

    python -m model.train.default_model --work runs/eve-tiny           # resumable; rerun the same command
    python -m model.train.default_model --work runs/eve-tiny --export-only

It builds a tokenizer and a from-scratch config, runs the staged pipeline (text warm-up, stage 1, 2.1, 2.2, 3 with a
curriculum of synthetic levels) through `model.train.pipeline`, evaluates the result on held-out samples, and exports
the checkpoint with its `tasks.json` and model card into `assets/eve-tiny`. Every step skips what is already done.
"""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from ..chat_template import get_template
from ..synthetic import TASK_INSTRUCTIONS
from ..synthetic.vocab import load_vocab
from .checkpoints import is_finished
from .export_default import export, stage_folder
from .pipeline import ForwardSignals
from .tokenizer import train_tokenizer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TASKS = "ocr,poster,webpage,scene"
# The model: widths and depth sized for a 2-core CPU; images of area 192^2 in 16-pixel patches (about 150 tokens).
MODEL = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mm_hidden_size": 128,
    "patch_stride": 8,
    "dense_stride": 2,
    "image_max_size": 192,
    "max_position_embeddings": 1024,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "tie_word_embeddings": False,
    "add_moe": True,
    "moe_part": "layernorm-self_attn-mlp",
    "mm_vision_tower": None,
}
# Stages in order, with their own flags (on top of COMMON). Steps are optimizer steps of 16 samples.
# Stages 1 and 2.1 also run at the full 192: halving it would put two characters in a patch and break the
# glyph-to-patch alignment that reading relies on (the paper's low resolution is 800 for 32-pixel patches).
STAGES = {
    "warmup": "--lr 2e-3 --max-steps 200",
    "1": "--lr 2e-3 --max-steps 200",
    "2.1": "--lr 1e-3 --max-steps 200",
    "2.2": "--lr 1e-3 --max-steps 200",
    "3": "--lr 1e-3 --max-steps 1600 --synthetic-level 0,1,2 --curriculum",
    # Stage 3 again, on OCR alone at level 0: after the mixed run the model knew every answer format but read nothing
    # (one constant word for every OCR image), so reading gets its own phase. A new seed: a new sample stream.
    "3:read": "--lr 1e-3 --max-steps 1200 --synthetic ocr --seed 7 --eval-every 200",
    # 3:read learned word endings and lengths but read little (held-out CER 0.63), and began to memorise the ~2,500
    # training words (train loss 1.53 against 2.07 on held-out words). Two changes from here on: OCR glyphs drawn
    # one per 16 x 16 patch (they were 16 x 32, split across two patch rows), and half of the words drawn are made-up
    # letter strings, which can only be read letter by letter. Then two-word lines and colours, with the other tasks
    # back at a lower share so that they are not forgotten (a task listed several times is drawn that much more
    # often), then the full mix.
    "3:glyphs": "--lr 1e-3 --max-steps 1000 --synthetic ocr --made-up-words 0.5 --seed 8 --eval-every 200",
    "3:words": "--lr 1e-3 --max-steps 1000 --synthetic ocr,ocr,ocr,ocr,poster,webpage,scene --synthetic-level 0,1 "
    "--curriculum --made-up-words 0.5 --seed 9",
    "3:mix": "--lr 5e-4 --max-steps 500 --synthetic-level 0,1,2 --made-up-words 0.5 --seed 10",
}
COMMON = (
    f"--synthetic {TASKS} --synthetic-level 0 --batch-size 16 --max-image-size 192 --save-every 200 "
    "--eval-every 500 --eval-samples 64 --log-every 20 --keep-checkpoints 2 --warmup-ratio 0.03"
)


def tokenizer_corpus() -> list[str]:
    """The fixed text of the chat format, instructions and answer templates, and the closed vocabularies.

    Open-vocabulary words (OCR text, headlines, site names) are left out on purpose, so that they tokenise into
    short pieces, close to one token per character: the model then reads a word glyph by glyph, one 16-pixel patch
    column per character, instead of having to recognise whole words as single tokens.
    """
    vocab = load_vocab()
    template = get_template("qwen2")
    # The system sentence opens every prompt: repeated so that BPE merges it into a few tokens.
    lines = [template.system + template.user_prefix + template.assistant_prefix + template.turn_end] * 100
    for task in vocab["instructions"].values():
        lines += [task["canonical"], *task["paraphrases"]]
    scene = vocab["scene"]
    lines += [
        f"{n} objects. {p}: {c} {s}."
        for n in range(1, 5)
        for p in scene["positions"]
        for c in scene["colors"]
        for s in scene["shapes"]
    ]
    lines += ["Title: . Date: .", "Site: . Links: , , . Headline: . Button: ."]
    lines += [" ".join(vocab["webpage"]["links"]), " ".join(vocab["webpage"]["buttons"])]
    lines += [" ".join(vocab["poster"]["months"]), " ".join(str(d) for d in range(32))]
    lines += list(TASK_INSTRUCTIONS.values())
    return lines * 3


def prepare(work: Path) -> tuple[Path, Path]:
    """Tokenizer and from-scratch config in `work` (made once)."""
    tokenizer_dir, config_file = work / "tokenizer", work / "config.json"
    if not config_file.is_file():
        tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=512)
        tokenizer.save_pretrained(str(tokenizer_dir))
        vocab_size = (len(tokenizer) + 63) // 64 * 64
        config = {
            **MODEL,
            "vocab_size": vocab_size,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
        }
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    return tokenizer_dir, config_file


def run_pipeline(work: Path, tokenizer_dir: Path, config_file: Path, launcher: str | None) -> int:
    stage_args = [f"{name}={flags}" for name, flags in STAGES.items()]
    command = [
        sys.executable,
        "-m",
        "model.train.pipeline",
        "--stages",
        ",".join(STAGES),
        "--output-dir",
        str(work / "stages"),
        "--from-scratch",
        str(config_file),
        "--tokenizer",
        str(tokenizer_dir),
        *[arg for s in stage_args for arg in ("--stage-args", s)],
        *shlex.split(COMMON),
    ]
    if launcher:
        command += ["--launcher", launcher]
    print("$", shlex.join(command), flush=True)
    return ForwardSignals().run(command, dict(os.environ), cwd=PROJECT_ROOT)  # SIGTERM reaches the running stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "runs" / "eve-tiny")
    parser.add_argument("--assets", type=Path, default=PROJECT_ROOT / "assets" / "eve-tiny")
    parser.add_argument("--launcher", help='e.g. "accelerate launch --config_file configs/accelerate/cpu.yaml"')
    parser.add_argument("--export-only", action="store_true", help="evaluate and export the last finished stage")
    parser.add_argument("--eval-n", type=int, default=200)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer_dir, config_file = prepare(args.work)
    if not args.export_only:
        code = run_pipeline(args.work, tokenizer_dir, config_file, args.launcher)
        if code != 0:
            return code
        if not is_finished(stage_folder(args.work, list(STAGES)[-1])):
            print("Training stopped before the last stage finished: rerun the same command to resume.")
            return 0

    return export(args.work, args.assets, list(STAGES), eval_n=args.eval_n)


if __name__ == "__main__":
    sys.exit(main())
