"""The training loop: metrics and run files, exact resume, SIGTERM, two-process DDP on CPU, synthetic streams, pipeline."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import AutoTokenizer

from model import load_pretrained
from model.synthetic import write_dataset
from model.train.args import TrainArgs, parse_args
from model.train.build import build_from_scratch
from model.train.checkpoints import is_finished, list_checkpoints
from model.train.data import Encoder
from model.train.loop import train
from model.train.metrics import STEP_KEYS
from model.train.pipeline import plan, run_pipeline
from model.train.recipe import make_optimizer
from model.train.stages import load_stages
from model.train.streaming import SyntheticStream
from model.train.tokenizer import train_tokenizer

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def llava_data(tmp_path_factory):
    """Nine synthetic samples in the LLaVA format: PNG files + data.json."""
    return write_dataset(tmp_path_factory.mktemp("llava"), ["ocr", "scene", "poster"], n=9, seed=1)


def _args(checkpoint, data, out, **overrides) -> TrainArgs:
    values = {"output_dir": str(out), "base": str(checkpoint), "data": [str(data)], "batch_size": 2, "lr": 1e-3}
    return TrainArgs(**{**values, **overrides})


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_cli_rejects_invalid_combinations(capsys):
    base = ["--output-dir", "out", "--data", "d.json"]
    assert parse_args([*base, "--base", "ckpt", "--stage", "2.1", "--data", "e.json,f.json"]).data == [
        "d.json",
        "e.json",
        "f.json",
    ]
    for bad in (
        ["--base", "a", "--from-scratch", "c.json"],
        ["--from-scratch", "c.json"],
        ["--base", "a", "--stage", "4"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(base + bad)
        assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        parse_args(["--output-dir", "out", "--base", "a", "--synthetic", "ocr"])  # an endless stream needs --max-steps
    assert "--max-steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([*base, "--base", "a", "--curriculum"])  # a curriculum orders synthetic levels
    synthetic = ["--output-dir", "o", "--base", "a", "--synthetic", "ocr,scene", "--max-steps", "5", "--curriculum"]
    assert parse_args([*synthetic, "--synthetic-level", "0,1"]).synthetic_level == [0, 1]
    assert parse_args([*synthetic, "--made-up-words", "0.5"]).made_up_words == 0.5
    assert parse_args([*synthetic, "--spell-answers"]).spell_answers and not parse_args(synthetic).spell_answers
    assert parse_args(synthetic).placement_spread == [1.0, 1.0]
    assert parse_args([*synthetic, "--placement-spread", "0"]).placement_spread == [0.0, 0.0]
    assert parse_args([*synthetic, "--placement-spread", "0,1"]).placement_spread == [0.0, 1.0]
    assert parse_args([*synthetic, "--fixed-place-share", "0.5"]).fixed_place_share == 0.5
    assert parse_args(synthetic).ocr_jitter == [0, 0] and parse_args(synthetic).ocr_visitor_share == 0.0
    assert parse_args([*synthetic, "--ocr-jitter", "8"]).ocr_jitter == [8, 8]
    assert parse_args([*synthetic, "--ocr-jitter", "1,8", "--ocr-jitter-ramp", "0.25"]).ocr_jitter_ramp == 0.25
    assert parse_args([*synthetic, "--ocr-visitor-share", "0.1"]).ocr_visitor_share == 0.1
    assert parse_args(synthetic).ocr_visitor_fonts == "train"
    assert parse_args([*synthetic, "--ocr-visitor-fonts", "wide-train"]).ocr_visitor_fonts == "wide-train"
    assert parse_args(synthetic).ocr_visitor_spread == [1.0, 1.0]
    assert parse_args([*synthetic, "--ocr-visitor-spread", "0,1"]).ocr_visitor_spread == [0.0, 1.0]
    assert parse_args(synthetic).ocr_visitor_size_spread == []  # follows --ocr-visitor-spread
    assert parse_args([*synthetic, "--ocr-visitor-size-spread", "0"]).ocr_visitor_size_spread == [0.0, 0.0]
    assert parse_args([*synthetic, "--ocr-visitor-anchor-share", "0.2"]).ocr_visitor_anchor_share == 0.2
    assert parse_args([*synthetic, "--ocr-visitor-small-share", "0.3"]).ocr_visitor_small_share == 0.3
    assert parse_args([*synthetic, "--ocr-visitor-canvas-share", "0.5"]).ocr_visitor_canvas_share == 0.5
    for bad in (
        [*synthetic, "--ocr-visitor-fonts", "wide-test"],  # held out: evaluation only
        [*synthetic, "--ocr-visitor-spread", "0,2"],
        [*synthetic, "--ocr-jitter", "17"],
        [*synthetic, "--ocr-jitter", "1,2,3"],
        [*synthetic, "--ocr-jitter-ramp", "0"],
        [*synthetic, "--ocr-visitor-share", "1.5"],
        [*synthetic, "--ocr-visitor-small-share", "-0.1"],
        [*synthetic, "--ocr-visitor-canvas-share", "2"],
        [*base, "--base", "a", "--ocr-jitter", "4"],
        [*base, "--base", "a", "--ocr-visitor-share", "0.5"],
        [*synthetic, "--made-up-words", "2"],
        [*base, "--base", "a", "--made-up-words", "0.5"],
        [*synthetic, "--placement-spread", "1.5"],
        [*synthetic, "--placement-spread", "0,0.5,1"],
        [*base, "--base", "a", "--placement-spread", "0"],
        [*synthetic, "--fixed-place-share", "1.5"],
        [*base, "--base", "a", "--fixed-place-share", "0.5"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_metrics_run_args_and_final_model(tiny_checkpoint, llava_data, tmp_path):
    args = _args(
        tiny_checkpoint,
        llava_data,
        tmp_path,
        max_steps=4,
        eval_split=0.3,
        eval_every=2,
        log_every=1,
        gradient_checkpointing=True,
        num_workers=1,
    )
    assert train(args).status == "done"
    lines = _metrics(tmp_path)
    steps = [line for line in lines if "event" not in line]
    assert [line["step"] for line in steps] == [1, 2, 3, 4]
    for line in steps:
        assert set(STEP_KEYS) <= set(line) and line["total_steps"] == 4
        assert ("eval_loss" in line) == (line["step"] % 2 == 0)
    assert lines[-1]["event"] == "done" and lines[-1]["step"] == 4
    # run_args.json records what ran: the options left empty filled (here by the built-in defaults).
    recorded = TrainArgs.from_json(tmp_path / "run_args.json")
    assert recorded == args.with_defaults(tiny_checkpoint)
    assert (recorded.lr, recorded.spell_answers, recorded.image_resize) == (args.lr, False, "inference")
    _, processor = load_pretrained(tmp_path)
    assert processor.template.name == "qwen2"
    # Rerunning a finished run (--resume auto) does nothing.
    assert train(args).step == -1 and _metrics(tmp_path) == lines


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tiny_checkpoint, llava_data, tmp_path):
    common = {"max_steps": 6, "grad_accum": 2, "save_every": 3, "log_every": 1}
    assert train(_args(tiny_checkpoint, llava_data, tmp_path / "full", **common)).status == "done"
    AcceleratorState._reset_state(True)
    stopped = train(_args(tiny_checkpoint, llava_data, tmp_path / "split", stop_at_step=3, **common))
    assert stopped.status == "stopped" and stopped.checkpoint.name == "checkpoint-3"
    assert json.loads((stopped.checkpoint / "trainer_state.json").read_text())["step_in_epoch"] == 1  # mid-epoch
    AcceleratorState._reset_state(True)
    assert train(_args(tiny_checkpoint, llava_data, tmp_path / "split", **common)).status == "done"
    assert [m.get("step") for m in _metrics(tmp_path / "split")] == [1, 2, 3, 4, 5, 6, 6]
    full, _ = load_pretrained(tmp_path / "full")
    resumed, _ = load_pretrained(tmp_path / "split")
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_a_run_ended_early_keeps_the_schedule_of_the_full_run_and_is_finished(tiny_checkpoint, llava_data, tmp_path):
    common = {"max_steps": 6, "save_every": 3, "log_every": 1}
    assert train(_args(tiny_checkpoint, llava_data, tmp_path / "full", **common)).status == "done"
    AcceleratorState._reset_state(True)
    ended = train(_args(tiny_checkpoint, llava_data, tmp_path / "ended", end_at_step=3, **common))
    assert ended.status == "done" and is_finished(tmp_path / "ended")
    full_lines, ended_lines = _metrics(tmp_path / "full"), _metrics(tmp_path / "ended")
    assert [m.get("step") for m in ended_lines] == [1, 2, 3, 3]
    assert [m["lr"] for m in ended_lines[:3]] == [m["lr"] for m in full_lines[:3]]  # the 6-step schedule
    early, _ = load_pretrained(tmp_path / "ended")
    at_three = load_file(str(tmp_path / "full" / "checkpoint-3" / "model.safetensors"))
    shared = [name for name in early.state_dict() if name in at_three]
    assert len(shared) > 10
    for name in shared:
        assert torch.equal(early.state_dict()[name], at_three[name]), name
    with pytest.raises(ValueError, match="end-at-step"):
        _args(tiny_checkpoint, llava_data, tmp_path / "bad", end_at_step=7, **common)


@pytest.mark.slow  # runs a training job
def test_sigterm_saves_a_checkpoint_and_the_rerun_continues(tiny_checkpoint, llava_data, tmp_path):
    command = [
        sys.executable,
        "-m",
        "model.train",
        "--base",
        str(tiny_checkpoint),
        "--data",
        str(llava_data),
        "--output-dir",
        str(tmp_path),
        "--max-steps",
        "40",
        "--log-every",
        "1",
        "--save-every",
        "0",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        if "Training:" in line:  # signals are handled by now; wait for the first step before sending one
            while not (tmp_path / "metrics.jsonl").is_file() or not (tmp_path / "metrics.jsonl").read_text():
                time.sleep(0.005)
            process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=180) == 0, "".join(output)
    assert "Stopped by signal SIGTERM, checkpoint saved at" in "".join(output)
    stopped_at = _metrics(tmp_path)[-1]
    assert stopped_at["event"] == "stopped" and stopped_at["step"] < 40
    assert list_checkpoints(tmp_path)[-1].name == f"checkpoint-{stopped_at['step']}"
    rerun = subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"Resumed from {tmp_path / 'checkpoint-'}{stopped_at['step']}" in rerun.stderr
    lines = _metrics(tmp_path)
    assert [m["step"] for m in lines if "event" not in m] == list(range(1, 41))
    assert lines[-1] == {**lines[-1], "event": "done", "step": 40}


@pytest.mark.slow  # runs a training job
def test_two_cpu_processes_with_accelerate_launch(tiny_checkpoint, llava_data, tmp_path):
    # Stage 2.1 trains vision weights only; with the fixed seed, step 1 is text-only on both processes and step 3
    # text-only on one: a batch that reaches no trainable weight must still join the all-reduce.
    items = json.loads(llava_data.read_text())
    items += [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "the cat"}]}] * 9
    (tmp_path / "mixed.json").write_text(json.dumps(items))
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [
        *(str(accelerate), "launch", "--num_processes", "2", "--config_file", "configs/accelerate/cpu_ddp.yaml"),
        *(
            "-m",
            "model.train",
            "--base",
            str(tiny_checkpoint),
            "--stage",
            "2.1",
            "--data",
            str(tmp_path / "mixed.json"),
        ),
        *("--image-folder", str(llava_data.parent), "--output-dir", str(tmp_path / "out"), "--max-steps", "3"),
        *("--batch-size", "1", "--eval-split", "0.2", "--log-every", "1"),
    ]
    result = subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stderr
    lines = _metrics(tmp_path / "out")
    assert [m["step"] for m in lines] == [1, 2, 3, 3] and lines[-1]["event"] == "done"
    assert "eval_loss" in lines[-2]
    load_pretrained(tmp_path / "out")


def test_spell_answers_reaches_the_encoder_of_a_run(tiny):
    from model.constants import IGNORE_INDEX
    from model.train.recipe import make_encoder
    from model.train.stages import get_stage

    _, processor = tiny
    args = parse_args(
        ["--output-dir", "o", "--base", "a", "--synthetic", "ocr", "--max-steps", "5", "--spell-answers"]
    )
    encoder = make_encoder(args, get_stage("3"), processor)
    row = next(iter(SyntheticStream(["ocr"], 0, [0], encoder)))
    answer = processor.tokenizer.convert_ids_to_tokens([i for i in row["labels"] if i != IGNORE_INDEX])
    assert len(answer) > 3 and all(len(token) == 1 for token in answer if token != "<|im_end|>")


def test_synthetic_stream_is_sharded_and_resumable(tiny):
    _, processor = tiny
    encoder = Encoder(processor, max_image_size=32)

    def first(rank, start=0, n=3):
        stream = iter(SyntheticStream(["ocr", "scene"], 0, [0], encoder, rank=rank, world_size=2, start=start))
        return [next(stream)["input_ids"] for _ in range(n)]

    rank0, rank1 = first(0), first(1)
    assert all(a != b for a, b in zip(rank0, rank1))
    assert first(0, start=2, n=2) == rank0[1:]  # restarting at global sample 2 continues rank 0's shard
    curriculum = SyntheticStream(["ocr"], 0, [0, 1, 2], encoder, run_samples=9, curriculum=True)
    assert [curriculum.levels_at(i) for i in (0, 2, 3, 6, 8, 20)] == [
        [0],
        [0],
        [0, 1],
        [0, 1, 2],
        [0, 1, 2],
        [0, 1, 2],
    ]
    ramp = SyntheticStream(["ocr"], 0, [0], encoder, run_samples=100, spread=(0.0, 1.0))
    assert [ramp.spread_at(i) for i in (0, 50, 100, 150)] == [0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="run_samples"):
        SyntheticStream(["ocr"], 0, [0], encoder, spread=(0.0, 1.0))
    anchored = SyntheticStream(["ocr"], 0, [0], encoder, fixed_place_share=0.4)
    spreads = [anchored.spread_at(i) for i in range(1000)]
    assert set(spreads) == {0.0, 1.0} and 350 < spreads.count(0.0) < 450
    assert spreads == [anchored.spread_at(i) for i in range(1000)]  # a resumed run draws the same places


def test_synthetic_stream_ramps_ocr_jitter_and_keeps_the_fixed_place_on_the_grid(tiny):
    _, processor = tiny
    encoder = Encoder(processor, max_image_size=32)
    with pytest.raises(ValueError, match="run_samples"):
        SyntheticStream(["ocr"], 0, [0], encoder, ocr_jitter=(1, 8))
    stream = SyntheticStream(
        ["ocr"], 0, [0], encoder, run_samples=1000, fixed_place_share=0.25, ocr_jitter=(1, 8), ocr_jitter_ramp=0.5
    )
    options = [stream.ocr_options_at(i) for i in range(1000)]
    assert options == [stream.ocr_options_at(i) for i in range(1000)]  # a resumed run draws the same options
    for i, option in enumerate(options):
        if stream.spread_at(i) == 0.0:  # the fixed-place anchor: on the grid, grid font
            assert (option.jitter, option.fonts) == (0, None)
        else:
            assert option.jitter == round(1 + 7 * min(1.0, i / 500)) and option.fonts is None  # no visitor share
    visitors = SyntheticStream(["ocr"], 0, [0], encoder, ocr_visitor_share=0.3)
    fonts = [visitors.ocr_options_at(i).fonts for i in range(1000)]
    assert set(fonts) == {None, "train"} and 250 < fonts.count("train") < 350  # training fonts only
    wide = SyntheticStream(["ocr"], 0, [0], encoder, ocr_visitor_share=0.3, ocr_visitor_fonts="wide-train")
    assert [wide.ocr_options_at(i).fonts for i in range(1000)] == [f and "wide-train" for f in fonts]  # same draws
    # The visitor anchor opens like the jitter: spread 0 at the start, 1 from the end of the ramp, visitors only.
    with pytest.raises(ValueError, match="run_samples"):
        SyntheticStream(["ocr"], 0, [0], encoder, ocr_visitor_spread=(0.0, 1.0))
    opening = SyntheticStream(
        ["ocr"],
        0,
        [0],
        encoder,
        run_samples=1000,
        ocr_visitor_share=0.3,
        ocr_visitor_spread=(0.0, 1.0),
        ocr_jitter_ramp=0.5,
    )
    for i in range(1000):
        option = opening.ocr_options_at(i)
        assert option.visitor_spread == (min(1.0, i / 500) if option.fonts else 1.0)
        assert option.visitor_size_spread is None and not option.visitor_small  # the size follows the room
    # The place can open before the size, with a share of the visitor samples kept at the anchor throughout.
    place_first = SyntheticStream(
        ["ocr"],
        0,
        [0],
        encoder,
        run_samples=1000,
        ocr_visitor_share=1.0,
        ocr_visitor_spread=(0.0, 1.0),
        ocr_visitor_size_spread=(0.0, 0.0),
        ocr_visitor_anchor_share=0.25,
    )
    drawn = [place_first.ocr_options_at(i) for i in range(1000)]
    anchored = [i for i, option in enumerate(drawn) if (option.visitor_spread, option.visitor_size_spread) == (0, 0)]
    assert 200 < len(anchored) < 300  # the anchor share, plus the ramp's first sample
    for i, option in enumerate(drawn):
        assert option.visitor_size_spread == 0.0 and option.fonts == "train"
        assert option.visitor_spread in (0.0, i / 1000)  # at the anchor, or where the place ramp is
    # A share of the visitor samples off the anchor can be kept to the smallest sizes.
    small_first = SyntheticStream(
        ["ocr"], 0, [0], encoder, ocr_visitor_share=0.5, ocr_visitor_anchor_share=0.2, ocr_visitor_small_share=0.3
    )
    drawn = [small_first.ocr_options_at(i) for i in range(1000)]
    small = [option for option in drawn if option.visitor_small]
    assert all(option.fonts and option.visitor_spread == 1.0 for option in small)  # visitor text, off the anchor
    assert 0.2 * 400 < len(small) < 0.4 * 400  # 30% of the 0.5 * 0.8 = 400 visitor samples off the anchor
    # And a share of them drawn on canvases of other shapes, drawn apart from the small share.
    shaped = SyntheticStream(["ocr"], 0, [0], encoder, ocr_visitor_share=0.5, ocr_visitor_canvas_share=0.5)
    drawn = [shaped.ocr_options_at(i) for i in range(1000)]
    assert all(option.fonts for option in drawn if option.visitor_canvas)
    assert 200 < sum(option.visitor_canvas for option in drawn) < 300 and not any(o.visitor_small for o in drawn)


def _scratch_files(tmp_path) -> tuple[Path, Path]:
    tokenizer = train_tokenizer(["Read the text. Describe the scene. red circle square <|im_end|>"] * 5, 300)
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config |= {"num_key_value_heads": 1, "mm_hidden_size": 16, "image_max_size": 64, "patch_stride": 8}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path / "config.json", tmp_path / "tok"


def test_from_scratch_on_a_synthetic_stream(tmp_path):
    config, tokenizer = _scratch_files(tmp_path)
    args = TrainArgs(
        output_dir=str(tmp_path / "out"),
        from_scratch=str(config),
        tokenizer=str(tokenizer),
        stage="2.1",
        synthetic=["ocr", "scene"],
        max_steps=2,
        batch_size=2,
        eval_samples=2,
        lr=1e-3,
        bf16=True,
    )
    assert train(args).status == "done"
    model, _ = load_pretrained(tmp_path / "out")
    params = dict(model.named_parameters())
    assert model.config.add_moe and model.config.vocab_size == len(AutoTokenizer.from_pretrained(str(tokenizer)))
    assert len([name for name in params if "moe_" in name]) == 24  # twins added for stage 2.1
    assert "eval_loss" in _metrics(tmp_path / "out")[-2]


@pytest.mark.slow  # runs a training job
def test_from_scratch_cli_in_a_fresh_interpreter(tmp_path):
    """`python -m model.train --from-scratch` (what `make default-model` runs) builds the model without the Auto
    classes being registered first."""
    config, tokenizer = _scratch_files(tmp_path)
    command = [sys.executable, "-m", "model.train", "--stage", "3", "--from-scratch", str(config)]
    command += ["--tokenizer", str(tokenizer), "--output-dir", str(tmp_path / "out"), "--synthetic", "ocr"]
    command += ["--max-steps", "1", "--batch-size", "2", "--eval-samples", "0", "--patch-embedding-lr", "1e-4"]
    result = subprocess.run(command, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "run_args.json").read_text())["patch_embedding_lr"] == 1e-4


def test_the_patch_embedding_trains_at_its_own_rate(tmp_path):
    config, tokenizer = _scratch_files(tmp_path)
    stage = load_stages()["3"]
    model, _ = build_from_scratch(config, tokenizer, stage)

    def optimizer(**rates):
        args = TrainArgs(
            output_dir=str(tmp_path),
            from_scratch=str(config),
            tokenizer=str(tokenizer),
            synthetic=["ocr"],
            max_steps=10,
            **rates,
        )
        return make_optimizer(model, args, stage, 10)[0]

    patch_ids = {id(p) for p in model.model.vision_tower.parameters()}
    rest, patch = optimizer(lr=3e-3, patch_embedding_lr=2e-4).param_groups
    assert {id(p) for p in patch["params"]} == patch_ids and patch["initial_lr"] == 2e-4
    assert not patch_ids & {id(p) for p in rest["params"]} and rest["initial_lr"] == 3e-3
    (single,) = optimizer(lr=3e-3).param_groups
    assert single["initial_lr"] == 3e-3 and patch_ids <= {id(p) for p in single["params"]}


FAKE_TRAIN = """
import json, sys
from pathlib import Path
argv = sys.argv[3:]  # after "-m model.train"
out = Path(argv[argv.index("--output-dir") + 1])
out.mkdir(parents=True, exist_ok=True)
with open(sys.argv[0] + ".log", "a") as log:
    log.write(json.dumps(argv) + "\\n")
if "--stop" not in argv:
    (out / "trainer_state.json").write_text(json.dumps({"finished": True}))
"""


def test_pipeline_chains_stages_and_skips_finished_ones(tmp_path):
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    runs = plan(["1", "2.1", "3"], tmp_path / "out", ["--base", "ckpt"], ["--lr", "1"], {"3": ["--stop"]})
    assert runs[0].argv[:2] == ["--base", "ckpt"] and runs[1].argv[:2] == ["--base", str(tmp_path / "out/stage-1")]
    assert run_pipeline(runs, [sys.executable, str(fake)]) == 0
    calls = [json.loads(line) for line in Path(str(fake) + ".log").read_text().splitlines()]
    assert [c[c.index("--stage") + 1] for c in calls] == ["1", "2.1", "3"]
    assert run_pipeline(runs, [sys.executable, str(fake)]) == 0  # stage 3 stopped unfinished: only it runs again
    calls = [json.loads(line) for line in Path(str(fake) + ".log").read_text().splitlines()]
    assert [c[c.index("--stage") + 1] for c in calls] == ["1", "2.1", "3", "3"]


def test_pipeline_runs_one_preset_twice_under_labels(tmp_path):
    runs = plan(["2.2", "3", "3:read"], tmp_path / "out", ["--base", "ckpt"], [], {"3:read": ["--seed", "7"]})
    assert [r.output_dir.name for r in runs] == ["stage-2.2", "stage-3", "stage-3-read"]
    read = runs[2].argv
    assert read[read.index("--stage") + 1] == "3" and read[-2:] == ["--seed", "7"]
    assert read[:2] == ["--base", str(tmp_path / "out/stage-3")] and "--seed" not in runs[1].argv
    with pytest.raises(ValueError, match="Unknown stage"):
        plan(["4:more"], tmp_path / "out", ["--base", "ckpt"], [])


def test_layout_mix_and_texture_share_draw_training_layouts_only_and_are_resumable():
    base = ["--output-dir", "o", "--base", "a"]
    synthetic = [*base, "--synthetic", "poster,webpage,scene", "--max-steps", "5"]
    parsed = parse_args([*synthetic, "--layout-mix", "0.5", "--texture-share", "0.2"])
    assert (parsed.layout_mix, parsed.texture_share) == (0.5, 0.2)
    assert (parse_args(synthetic).layout_mix, parse_args(synthetic).texture_share) == (0.0, 0.0)  # off by default
    for bad in ([*synthetic, "--layout-mix", "1.5"], [*base, "--layout-mix", "0.5"], [*base, "--texture-share", "1"]):
        with pytest.raises((SystemExit, ValueError)):
            parse_args(bad)
    stream = SyntheticStream(
        ["poster", "webpage", "scene"], 3, [0, 1, 2], None, fixed_place_share=0.25, layout_mix=0.5, texture_share=0.2
    )
    looks = [stream.look_at(i) for i in range(1000)]
    assert looks == [stream.look_at(i) for i in range(1000)]  # a resumed run draws the same layouts
    assert {layout for _, layout in looks} == {None, "train"}  # never the held-out layouts
    assert 300 < sum(layout == "train" for _, layout in looks) < 450  # half of the three quarters off the anchor
    assert 100 < sum(texture for texture, _ in looks) < 200
    assert all(look == (False, None) for i, look in enumerate(looks) if stream.at_fixed_place(i))  # the anchor stays
    plain = SyntheticStream(["poster"], 3, [0], None)
    assert all(plain.look_at(i) == (False, None) for i in range(100))  # the defaults draw today's samples
