"""The memory plan: parameter counts from a config equal the model's, the 7B's figures equal a hand computation, a
plan too large for the hardware is refused with a method that fits, and the shipped model's estimate is checked
against the peak memory of real training steps."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from model.configuration_eve import EveConfig
from model.modeling_eve import EveForCausalLM
from model.shared import PROJECT_ROOT
from model.synthetic import write_dataset
from model.train.memory_plan import (
    GIB,
    Sizes,
    Workload,
    parameter_shapes,
    plan_memory,
    read_config,
    sequence_length,
)

TINY = PROJECT_ROOT / "assets" / "eve-tiny"
SEVEN_B = EveConfig().to_dict()  # EveConfig's defaults are the released EVE-7B-HD-v2.0

# EVE-7B-HD-v2.0 by hand (hidden 3584, MLP 18944, 28 layers, 28 heads of 128, 4 key/value heads, vocab 152064).
Q, KV = 3584 * 3584 + 3584, 512 * 3584 + 512  # q and k/v projections with their biases
O, MLP = 3584 * 3584, 3 * 3584 * 18944
LAYER_COPY = Q + 2 * KV + O + MLP + 2 * 3584  # one weight copy of a decoder layer, its two norms included
EMBEDDING = 152064 * 3584  # embed_tokens; lm_head is the same size (untied)
PATCH = (1024 * 3 * 16 * 16 + 1024) + (3584 * 1024 * 2 * 2 + 3584) + 2 * 3584  # two convs, class and split tokens
P_7B = 28 * 2 * LAYER_COPY + 2 * EMBEDDING + 3584 + PATCH  # + the final norm
PROJECTIONS_7B = 28 * 2 * (3584 * 3584 * 2 + 512 * 3584 * 2 + MLP)  # the weights QLoRA stores in 4 bits
LORA_16_7B = 28 * 2 * 16 * ((3584 + 3584) * 2 + (3584 + 512) * 2 + (3584 + 18944) * 3)  # rank 16 on every projection


@pytest.mark.parametrize("config", [SEVEN_B, read_config(TINY)], ids=["7b", "shipped"])
def test_parameters_counted_from_the_config_are_the_models(config):
    with torch.device("meta"):
        model = EveForCausalLM(EveConfig.from_dict(config))
    assert parameter_shapes(Sizes.of(config)) == {name: tuple(p.shape) for name, p in model.named_parameters()}


def test_the_7b_plans_equal_a_hand_computation():
    assert P_7B == 14_156_712_960  # "14.16 B parameters with both copies"
    tokens = 4096
    full = plan_memory(SEVEN_B, Workload(devices=8, strategy="deepspeed-zero3", seq_len=tokens))
    assert full.parameters == full.trainable == P_7B
    # ZeRO-3 over 8 GPUs: bf16 weights (2 B) sharded, plus two gathered units in flight (the embedding, 2 B each);
    # bf16 gradients (2 B) and fp32 master weights with AdamW's two moments (12 B), sharded.
    assert full.weights == 2 * P_7B // 8 + 2 * 2 * EMBEDDING
    assert full.gradients == 2 * P_7B // 8
    assert full.optimizer == 12 * P_7B // 8
    assert round((full.weights + full.gradients + full.optimizer) / 1e9, 1) == 30.5  # 16 B x 14.16 B / 8 + 2.2 GB
    # Activations of one 4096-token row in bf16, per token: each layer 12 H (norms' fp32 inputs and outputs)
    # + 2 (H + 2 KV) (q, k, v) + 4 H (attention output and its copy) + 8 I (gate, SiLU, up, product) = 218,112 B,
    # over 28 layers plus one layer's gradients; the embedding and final norm (2 H + 6 H); the logits (14 B each).
    per_layer = 12 * 3584 + 2 * (3584 + 2 * 512) + 4 * 3584 + 8 * 18944
    assert per_layer == 218_112
    assert full.activations == tokens * (29 * per_layer + 8 * 3584 + 14 * 152064)
    assert round(full.activations / GIB, 2) == 32.36

    lora = plan_memory(SEVEN_B, Workload(method="lora", lora_rank=16, seq_len=tokens))
    assert lora.trainable == LORA_16_7B == 80_740_352
    assert lora.weights == 2 * P_7B + 4 * LORA_16_7B  # bf16 base, fp32 adapters
    assert (lora.gradients, lora.optimizer) == (4 * LORA_16_7B, 8 * LORA_16_7B)
    fp32_base = plan_memory(SEVEN_B, Workload(method="lora", lora_rank=16, lora_base_bf16=False, seq_len=tokens))
    assert fp32_base.weights == 4 * P_7B + 4 * LORA_16_7B
    qlora = plan_memory(SEVEN_B, Workload(method="qlora", lora_rank=16, seq_len=tokens))
    # nf4: half a byte per weight and one fp32 scale per 64 weights; the rest (embeddings, head, norms, biases, patch
    # embedding) in fp32 as prepare_model_for_kbit_training leaves it.
    assert qlora.weights == PROJECTIONS_7B * 9 // 16 + 4 * (P_7B - PROJECTIONS_7B) + 4 * LORA_16_7B
    assert round(qlora.weights / 1e9, 1) == 12.1


def test_a_stage_trains_only_its_groups_and_a_checkpoint_without_twins_gets_them():
    stage_1 = plan_memory(SEVEN_B, Workload(stage="1", seq_len=1000))
    assert stage_1.trainable == PATCH
    assert stage_1.gradients == 4 * PATCH and stage_1.weights == 4 * P_7B  # DDP: fp32 weights under autocast
    no_twins = {**SEVEN_B, "add_moe": False}
    assert plan_memory(no_twins, Workload(stage="1", seq_len=10)).parameters == P_7B - 28 * LAYER_COPY
    assert plan_memory(no_twins, Workload(stage="2.1", seq_len=10)).parameters == P_7B  # 2.1 adds the twins
    twins_lora = plan_memory(SEVEN_B, Workload(method="lora", lora_rank=16, stage="2.2", seq_len=10))
    assert twins_lora.trainable == LORA_16_7B // 2  # only the vision twins' projections get adapters


def test_a_plan_that_does_not_fit_is_refused_naming_a_method_that_fits():
    seq_len, image_tokens = sequence_length(SEVEN_B, "3", max_length=None)
    assert (seq_len, image_tokens) == (2551 + 256, 2551)  # one 1600 x 1600 image and the text allowance
    full = plan_memory(SEVEN_B, Workload(seq_len=seq_len, image_tokens=image_tokens))
    assert full.fitting_gpus() == []
    message = full.refusal(80 * GIB, SEVEN_B)
    assert message is not None and "full fine-tuning" in message and "LoRA would need" in message
    small_card = full.refusal(24 * GIB, SEVEN_B)
    assert small_card is not None and "QLoRA (4-bit) with gradient checkpointing would need" in small_card
    qlora = plan_memory(
        SEVEN_B,
        Workload(method="qlora", seq_len=seq_len, image_tokens=image_tokens, gradient_checkpointing=True),
    )
    assert qlora.fitting_gpus() == [24, 48, 80] and qlora.refusal(24 * GIB, SEVEN_B) is None
    assert "fits GPUs of 24 GB, 48 GB, 80 GB" in qlora.describe()
    sharded = plan_memory(SEVEN_B, Workload(devices=2, strategy="fsdp", seq_len=seq_len, image_tokens=image_tokens))
    small = sharded.refusal(24 * GIB, SEVEN_B)
    assert small is not None and "QLoRA (4-bit) with ddp and gradient checkpointing would need" in small
    refusal = sharded.refusal(48 * GIB, SEVEN_B)  # QLoRA keeps the 4-bit base whole: not offered under FSDP
    assert refusal is not None and "QLoRA" not in refusal and "LoRA would need" in refusal


MEASURE = """
import json, sys
from pathlib import Path
import torch, transformers, accelerate
from model.train.args import parse_args
from model.train.loop import train

def status(field):
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1]) * 1024

data, out, batch = sys.argv[1:4]
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts from the size now
before = status("VmRSS:")
train(parse_args(["--base", sys.argv[4], "--stage", "3", "--data", data, "--output-dir", out, "--max-steps", "2",
                  "--batch-size", batch, "--save-every", "0", "--cpu", "--lr", "1e-3", "--eval-split", "0"]))
print(json.dumps({"growth": status("VmHWM:") - before}))
"""


@pytest.mark.slow  # runs a training job
def test_the_shipped_models_estimate_matches_the_peak_of_real_training_steps(tmp_path):
    """Two full fine-tuning steps of the shipped model at batch 8 in a fresh process: its peak resident memory grows
    by at least the estimate and by less than 1.8 times it (the process also holds the data pipeline, and the
    allocator keeps freed blocks). Forgetting the activations, or counting them per weight copy, fails."""
    data = write_dataset(tmp_path / "data", ["ocr"], n=8, seed=1, level=0)
    rows = json.loads(data.read_text())
    from model.loading import load_pretrained
    from model.train.build import stage_processor
    from model.train.data import Encoder, load_records
    from model.train.stages import get_stage

    model, processor = load_pretrained(str(TINY))
    encoder = Encoder(stage_processor(processor.tokenizer, model.config, get_stage("3"), TINY), max_image_size=192)
    encoded = [encoder(r.load()["conversations"], r.image_paths(r.load())) for r in load_records([data])]
    seq_len = max(len(row["input_ids"]) for row in encoded)
    image_tokens = max(sum(row["mm_token_type_ids"]) for row in encoded)
    assert len(rows) == 8
    plan = plan_memory(
        read_config(TINY), Workload(batch_size=8, seq_len=seq_len, image_tokens=image_tokens, precision="fp32")
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEASURE), str(data), str(tmp_path / "run"), "8", str(TINY)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT), "PATH": ""},
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth"]
    print(f"peak RSS growth {growth / 2**20:.0f} MiB, estimate {plan.total / 2**20:.0f} MiB")
    assert plan.total <= growth <= 1.8 * plan.total, (growth, plan.describe())


def test_lora_parameters_are_what_peft_adds():
    """Rank 8 on every text and twin projection of the shipped model: the plan's count equals peft's."""
    peft = pytest.importorskip("peft")  # in the requirements with the LoRA methods
    from model.loading import load_pretrained

    model, _ = load_pretrained(str(TINY))
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    targets = projections + [f"moe_{name}" for name in projections[:4]]  # the twins' MLP is moe_mlp.gate_proj ...
    peft_model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=targets))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert plan_memory(read_config(TINY), Workload(method="lora", lora_rank=8, seq_len=10)).trainable == trainable
