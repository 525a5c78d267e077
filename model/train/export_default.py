"""Export a trained small model into `assets/eve-tiny`: weights, tokenizer, tasks.json, evaluation and model card.

Used by `model.train.default_model` after training (or with `--export-only` for the best stage reached so far).
"""

import json
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from ..evaluation.runner import evaluate_task, format_table
from ..loading import load_pretrained
from ..synthetic import TASK_INSTRUCTIONS, TASK_KEYS, TASKS
from .checkpoints import is_finished
from .pipeline import split_stage_name

CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")
TRAINED_LEVEL = 0  # the level every task of the default model is trained at
HARDER_OCR = [1, 2]  # two words, capitals and colours, two lines: not trained on, shown to mark where reading stops


def stage_folder(work: Path, name: str) -> Path:
    """Where the default-model pipeline writes stage `name` (a preset or PRESET:LABEL)."""
    return work / "stages" / split_stage_name(name)[1]


def last_finished_stage(work: Path, stages: Sequence[str]) -> Path:
    """The output folder of the latest stage whose final model is saved."""
    finished = [stage_folder(work, name) for name in stages if is_finished(stage_folder(work, name))]
    if not finished:
        raise SystemExit(f"No finished stage under {work / 'stages'}: train first")
    return finished[-1]


def trained_spread(stage_dir: Path) -> float:
    """The placement spread a stage ended at (its `--placement-spread` last value; 1, anywhere, when not set)."""
    args_file = stage_dir / "run_args.json"
    run_args = json.loads(args_file.read_text()) if args_file.is_file() else {}
    return float((run_args.get("placement_spread") or [1.0])[-1])


def spread_label(spread: Sequence[float] | None) -> str:
    """A run's `--placement-spread` as the card shows it: "0", "0.5", or a ramp "0→1" (runs without it: "1")."""
    first, last = spread or (1.0, 1.0)
    return f"{first:g}" if first == last else f"{first:g}→{last:g}"


def training_summary(work: Path, stages: Sequence[str]) -> tuple[list[dict], float]:
    """Per stage: data, levels, placement spread, learning rate (from its run_args.json), steps, final train and eval
    loss, time; and the total training time in hours."""
    rows, total = [], 0.0
    for name in stages:
        metrics_file = stage_folder(work, name) / "metrics.jsonl"
        if not metrics_file.is_file():
            continue
        lines = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        steps = [line for line in lines if "loss" in line]
        evals = [line for line in lines if line.get("eval_loss") is not None]
        elapsed = max((line.get("elapsed_s", 0.0) for line in lines), default=0.0)
        total += elapsed
        args_file = stage_folder(work, name) / "run_args.json"
        run_args = json.loads(args_file.read_text()) if args_file.is_file() else {}
        rows.append(
            {
                "stage": name,
                "data": ",".join(run_args.get("synthetic") or run_args.get("data") or []),
                "levels": ",".join(str(level) for level in run_args.get("synthetic_level") or []),
                "placement": spread_label(run_args.get("placement_spread")),
                "lr": run_args.get("lr"),
                "steps": steps[-1]["step"] if steps else 0,
                "loss": steps[-1]["loss"] if steps else None,
                "eval_loss": evals[-1]["eval_loss"] if evals else None,
                "hours": elapsed / 3600,
                "curve": [(line["step"], line["loss"], line.get("eval_loss")) for line in steps],
            }
        )
    return rows, total / 3600


def curve_table(rows: list[dict], points: int = 12) -> str:
    lines = ["| stage | step | train loss | eval loss |", "|---|---|---|---|"]
    for row in rows:
        curve = row["curve"]
        stride = max(1, len(curve) // points)
        for step, loss, eval_loss in curve[::stride] + ([curve[-1]] if curve and len(curve) % stride else []):
            shown = f"{eval_loss:.3f}" if eval_loss is not None else ""
            lines.append(f"| {row['stage']} | {step} | {loss:.3f} | {shown} |")
    return "\n".join(lines)


MAX_WEIGHTS_BYTES = 40_000_000  # the shipped weights stay small enough for a git repository


def save_weights(model, processor, assets: Path) -> None:
    """fp32 when it fits the size budget, else bf16 (loaded back as fp32 on CPU)."""
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    fp32_bytes = sum(p.numel() for p in model.parameters()) * 4
    if fp32_bytes > MAX_WEIGHTS_BYTES * 0.95:
        model = model.to(torch.bfloat16)
    model.save_pretrained(assets)
    processor.save_pretrained(assets)


def export(work: Path, assets: Path, stages: Sequence[str], eval_n: int = 200) -> int:
    """Evaluate the last finished of `stages` under `work` and write it with its card into `assets`."""
    source = last_finished_stage(work, stages)
    save_weights(*load_pretrained(source), assets)
    # Evaluate what ships: the exported files, loaded the way the app loads them.
    model, processor = load_pretrained(assets)
    # Every task where it was trained: level 0, text within the room the last stage placed it in. OCR at level 0
    # is what the app's end-to-end reading test relies on (it renders words with this row's spread).
    spread = trained_spread(source)
    results = [evaluate_task(model, processor, task, eval_n, level=TRAINED_LEVEL, spread=spread) for task in TASKS]
    if spread < 1:  # and where reading stops: words placed anywhere, and harder text
        results.append(evaluate_task(model, processor, "ocr", eval_n, level=TRAINED_LEVEL))
    results.append(evaluate_task(model, processor, "ocr", eval_n, level=HARDER_OCR, spread=spread))
    table = format_table(results)
    print(table)
    tasks = {name: {"task": TASK_KEYS[name], "instruction": text} for name, text in TASK_INSTRUCTIONS.items()}
    (assets / "tasks.json").write_text(json.dumps(tasks, indent=2) + "\n")
    (assets / "eval.json").write_text(json.dumps({"checkpoint": str(source.name), "results": results}, indent=2))
    rows, hours = training_summary(work, stages)
    stage_lines = "\n".join(
        f"| {r['stage']} | {r['data']} | {r['levels']} | {r['placement']} | {r['lr']} | {r['steps']} | {r['loss']:.3f} | "
        f"{'' if r['eval_loss'] is None else format(r['eval_loss'], '.3f')} | {r['hours']:.2f} |"
        for r in rows
        if r["loss"] is not None
    )
    card = CARD_TEMPLATE.read_text().format(
        params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}",
        config=json.dumps(
            {
                k: getattr(model.config, k)
                for k in (
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "mm_hidden_size",
                    "patch_stride",
                    "dense_stride",
                    "image_max_size",
                    "vocab_size",
                )
            },
            indent=2,
        ),
        stage_table=stage_lines,
        hours=f"{hours:.1f}",
        hardware=f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        eval_table=table,
        eval_n=eval_n,
        curves=curve_table(rows),
        source=source.name,
    )
    (assets / "README.md").write_text(card)
    print(f"Exported {source} to {assets}")
    return 0
