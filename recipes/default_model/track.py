"""Follow the default model's main training run: score its checkpoints on held-out samples, keep the best one.

    python -m recipes.default_model.track --work runs/eve-tiny            # runs beside `recipes.default_model`
    python -m recipes.default_model.track --work runs/eve-tiny --once     # score what is there now, then exit

The training loss falls long before a small model reads (see docs/notes/small-model-notes.md), so checkpoints are
judged by what they answer: every `--every` steps (and the finished model), `--n` held-out samples per task, levels
0-2 mixed, text anywhere, on a validation seed (the shipped figures in eval.json use another one). Scores go to
`WORK/curve.jsonl` (the learning curve of the model card); the best checkpoint so far is written, loadable and without
optimizer state, to `WORK/best/`, replacing the one it supersedes. `recipes.default_model` exports `WORK/best/`.
Resumable: checkpoints already in curve.jsonl are not scored again.
"""

import argparse
import functools
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.evaluation.metrics import MAIN_METRIC
from model.evaluation.runner import EVAL_SEED, evaluate_task
from model.loading import load_pretrained
from model.modeling_eve import EveForCausalLM
from model.processing_eve import EveProcessor
from model.synthetic import TASKS
from model.synthetic.render import visitor_fonts_installed
from model.train.build import build_from_scratch
from model.train.checkpoints import STATE_FILE, is_finished, list_checkpoints
from model.train.stages import load_stages

VALIDATION_SEED = EVAL_SEED + 17  # neither a training seed nor the seed of the shipped evaluation
LEVELS = [0, 1, 2]
TRACK_EVERY, TRACK_N = 200, 32  # score every 200th step on 32 samples per task (about 10 s of one core)
BEST = "best"
CURVE = "curve.jsonl"
FIXED_PLACE_OCR = "ocr0"  # the curve's name for OCR with the text at the first free patch
# OCR off the patch grid (not scored): held-out words moved by up to 8 pixels each way (every sub-patch phase), and
# visitor-style text in the two held-out fonts at any pixel; what issue 31's go/no-go reads.
OFF_GRID_JITTER = 8
OFF_GRID_OCR = "ocr_px"
HELD_OUT_FONT_OCR = "ocr_font"
# Visitor-style text in the held-out free families (Liberation Sans, Serif and Mono, Carlito; `make fonts`): the ship
# criterion's row "held-out words at random pixel offsets in held-out fonts" for the `fonts` recipe.
HELD_OUT_FAMILY_OCR = "ocr_wide"
# The same at the visitor anchor (32 px at the top-left corner, `--ocr-visitor-spread 0`) in the training families and
# in the held-out ones: where the `fonts` recipe's reading starts, as "ocr0" is for the grid.
ANCHOR_OCR, HELD_OUT_FAMILY_ANCHOR_OCR = "ocr_anchor", "ocr_wide0"
# The held-out families with one of the two opened: anywhere at the anchor's 32 px, and 16-48 px at its corner
# (`--ocr-visitor-size-spread`): which of place and size a run has not learnt yet.
HELD_OUT_FAMILY_PLACE_OCR, HELD_OUT_FAMILY_SIZE_OCR = "ocr_wide_place", "ocr_wide_size"
# The held-out families at any pixel and size on landscape-to-square canvases (`VISITOR_CANVASES`) instead of the OCR
# task's 4:1 strip: the shape of a visitor's own image.
HELD_OUT_FAMILY_CANVAS_OCR = "ocr_wide_canvas"
# Scenes and posters at level 3 (shapes of varied size shifted in their cells; posters in any DejaVu font off the
# grid): layouts neither recipe trains on, the rows issue 31's ship criterion reads for them (not scored).
UNSEEN_LAYOUT_LEVEL = 3
UNSEEN_LAYOUT_SCENE, UNSEEN_LAYOUT_POSTER = "scene3", "poster3"
# Scenes and posters at levels 0-2 in the generator's held-out layouts (`layout="test"`: shapes smaller than any trained
# anywhere in their cells; the date above the title beside a side band), which no training layout (`--layout-mix`) draws:
# the rows of the ship criterion "scene colour and shape >= 0.6, poster title and date >= 0.5" (not scored).
HELD_OUT_LAYOUT_SCENE, HELD_OUT_LAYOUT_POSTER = "scene_layout", "poster_layout"
UNSCORED = (
    FIXED_PLACE_OCR,
    OFF_GRID_OCR,
    HELD_OUT_FONT_OCR,
    HELD_OUT_FAMILY_OCR,
    ANCHOR_OCR,
    HELD_OUT_FAMILY_ANCHOR_OCR,
    HELD_OUT_FAMILY_PLACE_OCR,
    HELD_OUT_FAMILY_SIZE_OCR,
    HELD_OUT_FAMILY_CANVAS_OCR,
    UNSEEN_LAYOUT_SCENE,
    UNSEEN_LAYOUT_POSTER,
    HELD_OUT_LAYOUT_SCENE,
    HELD_OUT_LAYOUT_POSTER,
)


def score_of(results: list[dict]) -> float:
    """One number to rank checkpoints by: the mean of every task's main metric (text anywhere)."""
    scored = [r for r in results if r["task"] not in UNSCORED]
    return sum(r["metrics"][MAIN_METRIC[r["task"]]] for r in scored) / len(scored)


def load_checkpoint(work: Path, checkpoint: Path) -> tuple[EveForCausalLM, EveProcessor]:
    """The model of a training checkpoint: the run's from-scratch architecture (`WORK/config.json`, every stage of
    the recipe shares it) with the checkpoint's weights, and the stage-3 processor of `WORK/tokenizer`."""
    model, processor = build_from_scratch(work / "config.json", work / "tokenizer", load_stages()["3"])
    state = load_file(str(checkpoint / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise ValueError(f"{checkpoint} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    return model.eval(), processor


def evaluate(model, processor, n: int) -> list[dict]:
    """Every task at levels 0-2 with text anywhere (what the score ranks), then, not scored, OCR with its text at the
    first free patch (task "ocr0": reading is learnt there first, so it moves long before the scored rows do), off
    the patch grid ("ocr_px"), in held-out fonts ("ocr_font"; "ocr_wide" in the held-out free families once `make
    fonts` installed them, also at the anchor, with only its place or only its size opened, and on canvases of other
    shapes), scenes and posters at level 3 ("scene3", "poster3") and in the generator's held-out layouts at levels
    0-2 ("scene_layout", "poster_layout")."""
    results = [
        evaluate_task(model, processor, task, n, level=LEVELS, seed=VALIDATION_SEED, batch_size=16) for task in TASKS
    ]
    ocr = functools.partial(evaluate_task, model, processor, "ocr", n, level=LEVELS, seed=VALIDATION_SEED)
    return results + [
        {**ocr(spread=0.0), "task": FIXED_PLACE_OCR},
        {**ocr(ocr_jitter=OFF_GRID_JITTER), "task": OFF_GRID_OCR},
        {**ocr(ocr_fonts="test"), "task": HELD_OUT_FONT_OCR},
        *(
            [
                {**ocr(ocr_fonts="wide-test"), "task": HELD_OUT_FAMILY_OCR},
                {**ocr(ocr_fonts="wide-train", ocr_visitor_spread=0.0), "task": ANCHOR_OCR},
                {**ocr(ocr_fonts="wide-test", ocr_visitor_spread=0.0), "task": HELD_OUT_FAMILY_ANCHOR_OCR},
                {**ocr(ocr_fonts="wide-test", ocr_visitor_size_spread=0.0), "task": HELD_OUT_FAMILY_PLACE_OCR},
                {
                    **ocr(ocr_fonts="wide-test", ocr_visitor_spread=0.0, ocr_visitor_size_spread=1.0),
                    "task": HELD_OUT_FAMILY_SIZE_OCR,
                },
                {**ocr(ocr_fonts="wide-test", ocr_visitor_canvas=True), "task": HELD_OUT_FAMILY_CANVAS_OCR},
            ]
            if visitor_fonts_installed()
            else []
        ),
        *(
            {**evaluate_task(model, processor, task, n, level=UNSEEN_LAYOUT_LEVEL, seed=VALIDATION_SEED), "task": name}
            for task, name in (("scene", UNSEEN_LAYOUT_SCENE), ("poster", UNSEEN_LAYOUT_POSTER))
        ),
        *(
            {
                **evaluate_task(model, processor, task, n, level=LEVELS, seed=VALIDATION_SEED, layout="test"),
                "task": name,
            }
            for task, name in (("scene", HELD_OUT_LAYOUT_SCENE), ("poster", HELD_OUT_LAYOUT_POSTER))
        ),
    ]


def scored_steps(work: Path, stage: str) -> dict[int, float]:
    """Steps of `stage` (a stage folder name) already in the curve, with their scores."""
    curve = work / CURVE
    if not curve.is_file():
        return {}
    rows = map(json.loads, curve.read_text().splitlines())
    return {row["step"]: row["score"] for row in rows if row.get("step") and row.get("stage", "stage-3") == stage}


def record(work: Path, step: int, results: list[dict], seconds: float, source: Path, stage: str) -> float:
    score = score_of(results)
    row = {
        "stage": stage,
        "step": step,
        "score": round(score, 4),
        "time": time.strftime("%H:%M:%S"),
        "eval_s": round(seconds, 1),
        "source": source.name,
        **{r["task"]: {k: round(v, 4) for k, v in r["metrics"].items()} for r in results},
    }
    with (work / CURVE).open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return score


def save_best(work: Path, model, processor, stage_dir: Path, step: int, score: float) -> None:
    """Writes the best model to WORK/best (via a temporary folder, so a stop midway leaves the old one intact)."""
    tmp = work / (BEST + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    processor.save_pretrained(tmp)
    for name in ("run_args.json", "metrics.jsonl"):
        if (stage_dir / name).is_file():
            shutil.copy(stage_dir / name, tmp / name)
    (tmp / "best.json").write_text(json.dumps({"step": step, "score": score}) + "\n")
    (tmp / STATE_FILE).write_text(json.dumps({"step": step, "finished": True}) + "\n")
    shutil.rmtree(work / BEST, ignore_errors=True)
    tmp.rename(work / BEST)


def best_score(work: Path) -> float:
    info = work / BEST / "best.json"
    return json.loads(info.read_text())["score"] if info.is_file() else -1.0


def track(work: Path, stage_dir: Path, every: int, n: int, once: bool, poll_s: float) -> int:
    while True:
        done = scored_steps(work, stage_dir.name)
        finished = is_finished(stage_dir)
        candidates = [c for c in list_checkpoints(stage_dir) if int(c.name.split("-")[-1]) % every == 0]
        todo = [c for c in candidates if int(c.name.split("-")[-1]) not in done]
        if finished:
            final_step = json.loads((stage_dir / STATE_FILE).read_text())["step"]
            if final_step not in done:
                started = time.perf_counter()
                model, processor = load_pretrained(stage_dir)
                results = evaluate(model, processor, n)
                score = record(work, final_step, results, time.perf_counter() - started, stage_dir, stage_dir.name)
                if score >= best_score(work):
                    save_best(work, model, processor, stage_dir, final_step, score)
            return 0
        if todo:
            checkpoint = todo[-1]
            step = int(checkpoint.name.split("-")[-1])
            started = time.perf_counter()
            try:
                model, processor = load_checkpoint(work, checkpoint)
            except (OSError, ValueError) as error:  # rotated away while loading: the next one comes
                print(f"skipped {checkpoint}: {error}", flush=True)
            else:
                results = evaluate(model, processor, n)
                score = record(work, step, results, time.perf_counter() - started, checkpoint, stage_dir.name)
                if score > best_score(work):
                    save_best(work, model, processor, stage_dir, step, score)
            continue
        if once:
            return 0
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    from .export import stage_folder
    from .recipe import PROJECT_ROOT, RECIPES, tracked_stage

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / "runs" / "eve-tiny")
    parser.add_argument(
        "--every", type=int, default=TRACK_EVERY, help="score checkpoints whose step is a multiple of this"
    )
    parser.add_argument("--n", type=int, default=TRACK_N, help="held-out samples per task")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--recipe", choices=list(RECIPES), default="grid", help="the recipe the run follows")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between looks for a new checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    return track(
        args.work, stage_folder(args.work, tracked_stage(args.recipe)), args.every, args.n, args.once, args.poll
    )


if __name__ == "__main__":
    sys.exit(main())
