"""The training command a job runs: always `accelerate launch` with the right config file, never a shell string."""

import shlex
import sys

import pytest

from eve_app.jobs import ConfigError, JobConfig, build_command, command_preview, config_problems, stage_presets
from model.shared import PROJECT_ROOT

LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]


def config(**fields) -> JobConfig:
    values = {"base": "/ckpt", "data": "/d/train.json", "image_folder": "/d/files", "output_dir": "/runs/1/out"}
    return JobConfig(**{**values, **fields})


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cpu_single_process():
    argv = build_command(config(max_steps=3, lr=1e-4, max_image_size=64, max_length=512, seed=7))
    assert argv[:5] == [*LAUNCH, "configs/accelerate/cpu.yaml"]
    assert "--num_processes" not in argv
    assert int(flag(argv, "--num_cpu_threads_per_process")) >= 1  # passed: accelerate prints no notice of it
    assert argv[7:9] == ["-m", "model.train"]
    assert (flag(argv, "--base"), flag(argv, "--stage"), flag(argv, "--output-dir")) == ("/ckpt", "3", "/runs/1/out")
    assert (flag(argv, "--data"), flag(argv, "--image-folder")) == ("/d/train.json", "/d/files")
    assert (flag(argv, "--max-steps"), flag(argv, "--lr"), flag(argv, "--seed")) == ("3", "0.0001", "7")
    assert (flag(argv, "--max-image-size"), flag(argv, "--max-length")) == ("64", "512")
    assert "--epochs" not in argv and "--cpu" in argv and "--resume" not in argv
    assert (PROJECT_ROOT / "configs/accelerate/cpu.yaml").is_file()


def test_cpu_ddp_and_epochs():
    argv = build_command(config(cpu_processes=2, epochs=2.5))
    assert argv[:7] == [*LAUNCH, "configs/accelerate/cpu_ddp.yaml", "--num_processes", "2"]
    assert flag(argv, "--epochs") == "2.5" and "--max-steps" not in argv and "--cpu" in argv


@pytest.mark.parametrize(
    ("strategy", "yaml"),
    [
        ("ddp", "multi_gpu.yaml"),
        ("fsdp", "fsdp.yaml"),
        ("deepspeed-zero2", "deepspeed_zero2.yaml"),
        ("deepspeed-zero3", "deepspeed_zero3.yaml"),
    ],
)
@pytest.mark.parametrize("gpus", [1, 4])
def test_gpus_with_each_strategy(strategy, yaml, gpus):
    argv = build_command(config(hardware=gpus, strategy=strategy))
    assert argv[:7] == [*LAUNCH, f"configs/accelerate/{yaml}", "--num_processes", str(gpus)]
    assert argv[7:9] == ["-m", "model.train"] and "--cpu" not in argv
    assert (PROJECT_ROOT / "configs/accelerate" / yaml).is_file()


def test_pipeline_runs_each_stage_under_accelerate():
    argv = build_command(config(stages=["2.1", "2.2", "3"], hardware=8, strategy="deepspeed-zero3", max_steps=10))
    assert argv[:3] == [sys.executable, "-m", "model.train.pipeline"]
    assert (flag(argv, "--stages"), flag(argv, "--output-dir"), flag(argv, "--base")) == (
        "2.1,2.2,3",
        "/runs/1/out",
        "/ckpt",
    )
    launcher = shlex.split(flag(argv, "--launcher"))
    assert launcher == [*LAUNCH, "configs/accelerate/deepspeed_zero3.yaml", "--num_processes", "8"]
    assert "--stage" not in argv and flag(argv, "--max-steps") == "10"


def test_pipeline_stages_run_in_the_papers_order_whatever_order_they_were_ticked():
    argv = build_command(config(stages=["3", "2.2", "1"]))
    assert flag(argv, "--stages") == "1,2.2,3"
    with pytest.raises(ConfigError, match="listed twice"):
        build_command(config(stages=["3", "3"]))


def test_flags_parse_with_the_training_cli():
    """The flags after `-m model.train` are exactly what the CLI accepts (its own parser checks them)."""
    from model.train.args import parse_args

    argv = build_command(
        config(
            stage="2.1",
            max_steps=5,
            eval_split=0.25,
            eval_every=2,
            save_every=1,
            resume="/runs/0/out/checkpoint-4",
            extra_args=["--warmup-ratio", "0.1"],
        )
    )
    args = parse_args(argv[argv.index("model.train") + 1 :])
    assert (args.stage, args.max_steps, args.eval_split, args.save_every, args.cpu) == ("2.1", 5, 0.25, 1, True)
    assert (args.resume, args.warmup_ratio, args.data) == ("/runs/0/out/checkpoint-4", 0.1, ["/d/train.json"])


def test_the_method_and_rank_reach_the_training_cli():
    from model.train.args import parse_args

    argv = build_command(config(method="qlora", lora_rank=4, max_steps=5))
    args = parse_args(argv[argv.index("model.train") + 1 :])
    assert (args.method, args.lora_rank) == ("qlora", 4)
    full = build_command(config(max_steps=5))
    assert "--method" not in full and parse_args(full[full.index("model.train") + 1 :]).method == "full"
    assert JobConfig.from_json(config(method="lora").to_json()).method == "lora"  # job.json keeps it


def test_preview_is_the_same_command():
    cfg = config(data="/my data/train.json", max_steps=2)
    preview = command_preview(cfg)
    assert shlex.split(preview) == build_command(cfg)
    assert "'/my data/train.json'" in preview


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"strategy": "fsdp"}, "strategy fsdp needs GPUs; on the CPU use ddp"),
        ({"strategy": "deepspeed-zero3"}, "strategy deepspeed-zero3 needs GPUs"),
        ({"hardware": 2, "strategy": "zero"}, "unknown strategy 'zero'"),
        ({"hardware": 0}, 'hardware must be "cpu" or a number of GPUs'),
        ({"hardware": "tpu"}, 'hardware must be "cpu" or a number of GPUs'),
        ({"hardware": 2, "cpu_processes": 2}, "cpu_processes applies to CPU runs only"),
        ({"stage": "4"}, "unknown stage '4'"),
        ({"stages": ["1", "x"]}, "unknown stage 'x'"),
        ({"stages": []}, "a pipeline needs at least one stage"),
        ({"stages": ["3"], "resume": "/ckpt-5"}, "resume applies to one stage"),
        ({"lr": 0.0}, "the learning rate must be positive"),
        ({"epochs": 0}, "give a positive number of epochs or of max steps"),
        ({"max_steps": 0}, "max steps must be at least 1"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"eval_split": 1.0}, "the eval split is a fraction in [0, 1)"),
        ({"data": ""}, "choose a dataset"),
        ({"method": "dora"}, "unknown method 'dora'"),
        ({"lora_rank": 8}, "the LoRA rank is a whole number of at least 1, for the lora and qlora methods"),
        ({"method": "lora", "lora_rank": 0}, "the LoRA rank is a whole number"),
        ({"method": "qlora", "hardware": 4, "strategy": "fsdp"}, "qlora keeps the 4-bit base whole on each GPU"),
        ({"method": "qlora", "hardware": 2, "strategy": "deepspeed-zero3"}, "deepspeed-zero3 would shard it"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(fields, message):
    cfg = config(**fields)
    assert any(message in problem for problem in config_problems(cfg)), config_problems(cfg)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        build_command(cfg)


def test_output_dir_is_required_to_build():
    with pytest.raises(ConfigError, match="no output folder"):
        build_command(config(output_dir=None))


def test_save_and_load_settings(tmp_path):
    cfg = config(stages=["2.2", "3"], hardware=2, strategy="fsdp", lr=5e-5, extra_args=["--bf16"])
    path = cfg.save(tmp_path / "job.json")
    assert JobConfig.load(path) == cfg
    assert JobConfig.from_json(cfg.to_json()) == cfg
    assert JobConfig.from_dict({"base": "b", "data": "d", "hardware": "2"}).hardware == 2  # form text
    with pytest.raises(ConfigError, match=r"unknown job settings \['learning_rate'\]"):
        JobConfig.from_dict({"base": "b", "data": "d", "learning_rate": 1})
    with pytest.raises(ConfigError, match="not valid JSON"):
        JobConfig.from_json("{base: 1")
    with pytest.raises(ConfigError, match=r"missing job settings \['base'\]"):
        JobConfig.from_json('{"data": "d"}')


def test_stage_presets_come_from_the_json_file():
    presets = stage_presets()
    assert list(presets) == ["warmup", "1", "2.1", "2.2", "3"]
    assert presets["2.1"]["train"] == ["vision_tower", "moe"] and presets["3"]["lr"] == 2e-5


def test_jobs_package_stays_light():
    """The jobs layer imports neither torch, transformers nor gradio (checked in a fresh interpreter); it reads the
    shared facts from `model.shared`, which loads nothing heavy."""
    import subprocess

    heavy = "('torch', 'transformers', 'gradio', 'model.modeling_eve')"
    code = f"import sys, eve_app.jobs; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_every_flag_a_job_passes_is_a_training_cli_field():
    """The `JobConfig` fields declared as flags are named as the training CLI's own fields (one name for both), and
    the fine-tune form's fields are `JobConfig` fields in the form's order."""
    import dataclasses

    from eve_app.jobs.command import FORM
    from model.train.args import TrainArgs

    train_fields = {spec.name for spec in dataclasses.fields(TrainArgs)}
    flagged = [spec.name for spec in dataclasses.fields(JobConfig) if spec.metadata.get("flag")]
    assert flagged and set(flagged) <= train_fields
    assert [spec.name for spec in FORM][:3] == ["dataset", "base", "stages"]
