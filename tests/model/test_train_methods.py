"""Fine-tuning the shipped model as a new user would: only the method, 40 epochs and batch size 2 given.

The data: 10 words the generator never drew, in a font it never used (DejaVu Serif Italic, in tests/data/fonts),
asked with the OCR instruction. The job must read its own training images back exactly, through the chat's way of
reading (the inference processor, `load_pretrained` on the output folder): at least 9 of 10 after full and LoRA
fine-tuning, 8 of 10 after QLoRA. The options left empty come from `assets/eve-tiny/finetune_defaults.json` (learning
rate 3e-3, answers spelled one character per token, a frozen patch embedding under LoRA).
"""

import json
import os
import types
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoProcessor

from model import EveConfig, EveForCausalLM, load_pretrained
from model.evaluation.runner import answer_batch
from model.loading import adapter_base
from model.shared import task_instructions
from model.train.__main__ import main as train_main
from model.train.args import parse_args
from model.train.merge import main as merge_main
from model.train.methods import lora_target_modules
from model.train.stages import get_stage

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "assets" / "eve-tiny"
SERIF = ROOT / "tests" / "data" / "fonts" / "DejaVuSerif-Italic.ttf"  # no synthetic sample uses it
WORDS = ["quokka", "zephyr", "vortex", "kumquat", "glyph", "sphinx", "jigsaw", "wombat", "quartz", "fjord"]
QUESTION = task_instructions()["OCR"]
NEEDED = {"full": 9, "lora": 9, "qlora": 8}


def make_words(folder: Path, size: tuple[int, int]) -> Path:
    """10 rows: a word in DejaVu Serif, black on white, centred in an image of `size`; returns the LLaVA JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    font = ImageFont.truetype(str(SERIF), 36 if size[0] > 300 else 32)
    rows = []
    for word in WORDS:
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).text((size[0] // 2, size[1] // 2), word, font=font, fill="black", anchor="mm")
        image.save(folder / f"{word}.png")
        turns = [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": word}]
        rows.append({"id": word, "image": f"{word}.png", "conversations": turns})
    (folder / "data.json").write_text(json.dumps(rows))
    return folder / "data.json"


def read_back(model, processor, folder: Path) -> list[str]:
    """The model's greedy answers to its training images, asked as the chat asks (inference-rule resizing)."""
    samples = [
        types.SimpleNamespace(
            image=Image.open(folder / f"{word}.png"), conversations=[{"value": f"<image>\n{QUESTION}"}]
        )
        for word in WORDS
    ]
    return answer_batch(model, processor, samples, max_new_tokens=16)


def losses(output_dir: Path) -> list[float]:
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """Runs each (method, image size) job once for the module; returns {key: (output folder, data folder)}."""
    runs: dict[tuple[str, str], tuple[Path, Path]] = {}

    def run(method: str, size: tuple[int, int]) -> tuple[Path, Path]:
        key = (method, f"{size[0]}x{size[1]}")
        if key not in runs:
            root = tmp_path_factory.mktemp(f"{method}-{key[1]}")
            data = make_words(root / "data", size)
            threads = torch.get_num_threads()
            torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 2))  # the acceptance: 2 cores
            try:
                argv = ["--base", str(SHIPPED), "--data", str(data), "--output-dir", str(root / "out")]
                train_main([*argv, "--method", method, "--epochs", "40", "--batch-size", "2"])
            finally:
                torch.set_num_threads(threads)
            runs[key] = (root / "out", root / "data")
        return runs[key]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, size", [("full", (384, 96)), ("lora", (384, 96)), ("qlora", (384, 96)), ("lora", (256, 128))]
)
def test_a_job_with_only_the_method_given_reads_its_own_words_back_in_the_chat(
    jobs, method, size, fresh_accelerate_state
):
    output, data = jobs(method, size)
    run_args = json.loads((output / "run_args.json").read_text())
    # The empty options came from the shipped model's own fine-tuning defaults, not from the 7B's stage preset.
    assert run_args["lr"] == 0.003 and run_args["spell_answers"] is True and run_args["image_resize"] == "inference"
    trained = losses(output)
    assert trained[-1] < trained[0] / 10
    # QLoRA's adapter is read on the base it trained on (4-bit) and, as the chat loads it by default, in full precision.
    for quantization in ["4bit", None] if method == "qlora" else [None]:
        model, processor = load_pretrained(output, quantization=quantization)
        answers = read_back(model, processor, data)
        right = sum(answer == word for answer, word in zip(answers, WORDS))
        print(f"{method} {size} ({quantization or 'fp32'} base): {right}/10 read back: {answers}")
        assert right >= NEEDED[method], answers


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_an_adapter_job_writes_megabytes_that_name_their_base_and_carry_no_patch_embedding(
    jobs, method, fresh_accelerate_state
):
    output, _ = jobs(method, (384, 96))
    assert not (output / "config.json").exists()
    config = json.loads((output / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == SHIPPED.resolve()
    assert adapter_base(output) == str(SHIPPED.resolve())
    assert not config.get("modules_to_save")  # vLLM refuses adapters carrying anything but a classifier
    weights = output / "adapter_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in key for key in keys)
    assert any(".moe_q_proj." in key for key in keys) and any(".mlp.gate_proj." in key for key in keys)
    size_mb = weights.stat().st_size / 1e6
    print(f"{method} adapter: {size_mb:.2f} MB, {len(keys)} tensors")
    assert size_mb < (SHIPPED / "model.safetensors").stat().st_size / 1e6 / 4


@pytest.mark.slow
def test_merge_writes_a_checkpoint_that_answers_as_base_plus_adapter(jobs, tmp_path, fresh_accelerate_state):
    from peft import PeftModel

    output, data = jobs("lora", (384, 96))
    assert merge_main([str(output), str(tmp_path / "merged")]) == 0
    base, processor = load_pretrained(SHIPPED)
    adapted = PeftModel.from_pretrained(base, str(output)).eval()  # the adapter as a separate layer, not folded in
    merged, merged_processor = load_pretrained(tmp_path / "merged")
    assert read_back(merged, merged_processor, data) == read_back(adapted, processor, data)
    auto_model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert read_back(auto_model, AutoProcessor.from_pretrained(tmp_path / "merged"), data) == read_back(
        merged, merged_processor, data
    )
    assert (tmp_path / "merged" / "finetune_defaults.json").is_file()


def test_lora_options_without_a_lora_method_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--base", str(SHIPPED), "--data", "d.json", "--output-dir", "o", "--lora-rank", "4"])
    error = capsys.readouterr().err
    assert "--lora-rank" in error and "--method lora" in error


def test_lora_adapts_the_layers_of_the_stage_s_groups():
    with torch.device("meta"):
        model = EveForCausalLM(EveConfig.from_pretrained(SHIPPED))
    both = lora_target_modules(model, get_stage("3"), ["attention", "mlp"])
    assert both == sorted(
        [f"{twin}{name}" for twin in ("", "moe_") for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
        + ["down_proj", "gate_proj", "up_proj"]
    )
    twins = lora_target_modules(model, get_stage("2.1"), ["mlp"])  # the twins alone: their MLPs by full name
    assert twins and all(".moe_mlp." in name for name in twins) and len(twins) == 3 * model.config.num_hidden_layers
    assert lora_target_modules(model, get_stage("1"), ["attention", "mlp"]) == []


def test_the_words_and_their_font_are_new_to_the_shipped_model():
    from model.synthetic.render import FONT_FILES

    assert SERIF.name not in FONT_FILES.values()
    known = set((ROOT / "assets" / "wordlist.txt").read_text().split())
    assert not known & set(WORDS)


def test_empty_options_come_from_the_base_then_from_the_stage_preset(tmp_path):
    args = parse_args(["--base", str(SHIPPED), "--data", "d.json", "--output-dir", "o", "--method", "lora"])
    filled = args.with_defaults(SHIPPED)
    assert (filled.lr, filled.spell_answers, filled.lora_patch_embedding) == (0.003, True, False)
    assert (filled.lora_rank, filled.image_resize) == (8, "inference")
    bare = tmp_path / "bare"
    bare.mkdir()
    plain = parse_args(["--base", str(SHIPPED), "--data", "d.json", "--output-dir", "o", "--lr", "1e-4"])
    filled = plain.with_defaults(bare)
    assert (filled.lr, filled.spell_answers, filled.lora_rank) == (1e-4, False, None)
    assert parse_args(["--base", "b", "--data", "d.json", "--output-dir", "o"]).with_defaults(bare).lr == 2e-5
