"""Stage presets, vision-twin initialisation, LLaVA preprocessing and label masking of the training recipe."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model import EveForCausalLM, load_pretrained
from model.constants import IGNORE_INDEX
from model.synthetic import write_dataset
from model.train.args import TrainArgs
from model.train.build import load_base, stage_processor
from model.train.data import Collator, Encoder, LlavaDataset, SkipSample, load_records, to_messages
from model.train.loop import train
from model.train.stages import (
    describe_stage,
    get_stage,
    image_size_for,
    init_vision_twins,
    load_stages,
    parameter_group,
    set_trainable,
)

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def llava_data(tmp_path_factory):
    """Eight synthetic samples in the LLaVA format (PNG files + data.json), plus one text-only sample."""
    folder = tmp_path_factory.mktemp("llava")
    data_file = write_dataset(folder, ["ocr", "scene"], n=8, seed=0)
    items = json.loads(data_file.read_text())
    items.append(
        {"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    )
    data_file.write_text(json.dumps(items))
    return data_file


def test_presets_follow_the_paper():
    stages = load_stages()
    assert list(stages) == ["warmup", "1", "2.1", "2.2", "3"]
    assert {name: s.lr for name, s in stages.items() if name != "warmup"} == {
        "1": 2e-4,
        "2.1": 1e-4,
        "2.2": 5e-5,
        "3": 2e-5,
    }
    assert [stages[n].template for n in ("1", "2.1", "2.2", "3")] == ["plain", "plain", "plain", "qwen2"]
    assert stages["1"].train == ("vision_tower",) and stages["3"].train == ("vision_tower", "moe", "llm")
    assert stages["warmup"].train == ("llm",) and not stages["warmup"].uses_images
    assert image_size_for("2.1", 1600) == 800 and image_size_for("2.2", 1600) == 1600
    assert image_size_for("1", 1600, override=96) == 96 and image_size_for("warmup", 1600) is None
    assert "patch embedding" in describe_stage("1") and "Frozen: " in describe_stage("1")
    assert "vision twins" in describe_stage("2.1").split("Frozen")[0]
    with pytest.raises(ValueError, match="Unknown stage"):
        get_stage("4")


def test_parameter_groups_use_the_official_substring_rule():
    assert parameter_group("model.vision_tower.patch_embedding.0.weight") == "vision_tower"
    assert parameter_group("model.layers.0.self_attn.moe_q_proj.weight") == "moe"
    assert parameter_group("model.layers.0.moe_mlp.up_proj.weight") == "moe"
    for name in (
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.1.mlp.up_proj.weight",
    ):
        assert parameter_group(name) == "llm"


@pytest.mark.parametrize("stage", ["warmup", "1", "2.1", "2.2", "3"])
def test_set_trainable_marks_exactly_the_stage_groups(tiny, stage):
    model, _ = tiny
    try:
        trainable = set(set_trainable(model, stage))
        expected = {n for n, _ in model.named_parameters() if parameter_group(n) in get_stage(stage).train}
        assert trainable == expected and trainable
    finally:
        model.requires_grad_(True)


def test_init_vision_twins_copies_every_text_weight(tiny_checkpoint):
    model = EveForCausalLM.from_pretrained(str(tiny_checkpoint))
    params = dict(model.named_parameters())
    assert not torch.equal(
        params["model.layers.0.self_attn.moe_q_proj.weight"], params["model.layers.0.self_attn.q_proj.weight"]
    )
    copied = init_vision_twins(model)
    assert len(copied) == 24 and all("moe_" in name for name in copied)  # 2 layers x 12 tensors
    for name in copied:
        assert torch.equal(params[name], params[name.replace("moe_", "")]), name


def test_a_checkpoint_without_twins_gets_twins_equal_to_its_text_weights(tiny_checkpoint_no_moe):
    on_disk = {}
    for shard in tiny_checkpoint_no_moe.glob("*.safetensors"):
        on_disk.update(load_file(shard))
    model, processor = load_base(tiny_checkpoint_no_moe, get_stage("2.1"))
    assert model.config.add_moe and model.config.moe_part == "layernorm-self_attn-mlp"
    assert processor.template.name == "plain"
    params = dict(model.named_parameters())
    twins = [name for name in params if "moe_" in name]
    assert len(twins) == 24
    for name in twins:
        assert torch.equal(params[name], on_disk[name.replace("moe_", "")]), name
    for name, tensor in on_disk.items():
        assert torch.equal(params[name], tensor), name


def test_llava_turns_become_messages_with_the_placeholder_first():
    turns = [{"from": "human", "value": "What is it? <image>"}, {"from": "gpt", "value": "A cat."}]
    assert to_messages(turns, num_images=1) == [
        {"role": "user", "content": "<|image_pad|>\nWhat is it?"},
        {"role": "assistant", "content": "A cat."},
    ]
    no_placeholder = [{"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Red."}]
    assert to_messages(no_placeholder, num_images=1)[0]["content"] == "<|image_pad|>\nDescribe."
    two = [{"from": "human", "value": "<image> vs <image>?"}, {"from": "gpt", "value": "Same."}]
    assert (
        to_messages(two, num_images=2)[0]["content"] == "<|image_pad|> vs <|image_pad|>?"
    )  # several images keep their order
    assert to_messages(turns, num_images=1, keep_images=False)[0]["content"] == "What is it?"
    with pytest.raises(SkipSample, match="first turn"):
        to_messages(turns[::-1], num_images=1)
    with pytest.raises(SkipSample, match="placeholders"):
        to_messages(two, num_images=1 + 2)


def test_label_masking_supervises_only_answers_and_turn_ends(tiny):
    _, processor = tiny
    encoder = Encoder(processor, max_image_size=64)
    turns = [
        {"from": "human", "value": "<image>\nwhat is written here"},
        {"from": "gpt", "value": "hello world"},
        {"from": "human", "value": "describe image"},
        {"from": "gpt", "value": "a red circle"},
    ]
    row = encoder(turns, [Image.new("RGB", (64, 64))])
    supervised = [i for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == " hello world<|im_end|> a red circle<|im_end|>"
    assert all(label == IGNORE_INDEX for label, flag in zip(row["labels"], row["mm_token_type_ids"]) if flag)
    plain = Encoder(stage_processor(processor.tokenizer, tiny[0].config, get_stage("1")), max_image_size=32)
    row = plain(turns[:2], [Image.new("RGB", (64, 64))])
    supervised = [i for i, label in zip(row["input_ids"], row["labels"]) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == "hello world\n"
    assert len(row["pixel_values"]) == 1 and row["pixel_values"][0].shape[-2:] == (32, 32)  # the stage's low res


def test_max_length_cuts_text_but_never_an_image(tiny):
    _, processor = tiny
    turns = [{"from": "human", "value": "<image>\nwhat is written here"}, {"from": "gpt", "value": "hello " * 30}]
    full = Encoder(processor, max_image_size=64)(turns, [Image.new("RGB", (64, 64))])
    cut = Encoder(processor, max_image_size=64, max_length=len(full["input_ids"]) - 5)(
        turns, [Image.new("RGB", (64, 64))]
    )
    assert cut["input_ids"] == full["input_ids"][:-5] and cut["labels"] == full["labels"][:-5]
    with pytest.raises(SkipSample, match="cuts an image"):
        Encoder(processor, max_image_size=64, max_length=40)(turns, [Image.new("RGB", (64, 64))])


def test_dataset_skips_bad_samples_and_collates_right_padded(tiny, tmp_path):
    _, processor = tiny
    Image.new("RGB", (64, 32)).save(tmp_path / "a.png")
    (tmp_path / "one.json").write_text(
        json.dumps(
            {
                "image": "a.png",
                "conversations": [{"from": "human", "value": "what"}, {"from": "gpt", "value": "hello world"}],
            }
        )
    )
    items = [
        {"id": "bad", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        "one.json",  # a per-sample file, relative to the list's folder
        {"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "the cat"}]},
    ]
    (tmp_path / "data.json").write_text(json.dumps(items))
    dataset = LlavaDataset(load_records([tmp_path / "data.json"]), Encoder(processor, max_image_size=64))
    rows = [dataset[i] for i in range(len(dataset))]
    assert dataset.skipped.counts == {"first turn is not from the human": 1}
    assert [len(r["pixel_values"]) for r in rows] == [1, 1, 0]  # the bad sample was replaced by the next one
    batch = Collator(processor)(rows[1:])
    lengths = [len(r["input_ids"]) for r in rows[1:]]
    assert batch["input_ids"].shape == (2, max(lengths)) and len(batch["pixel_values"]) == 1
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert batch["attention_mask"][lengths.index(min(lengths))].tolist()[-1] == 0  # padded on the right
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


@pytest.mark.parametrize("stage", ["warmup", "1", "2.1", "2.2", "3"])
def test_a_short_run_updates_exactly_the_parameters_the_stage_names(tiny_checkpoint, llava_data, tmp_path, stage):
    before = EveForCausalLM.from_pretrained(str(tiny_checkpoint)).state_dict()
    args = TrainArgs(
        output_dir=str(tmp_path / "out"),
        base=str(tiny_checkpoint),
        stage=stage,
        data=[str(llava_data)],
        max_steps=2,
        batch_size=2,
        lr=1e-2,
        save_every=0,
        log_every=1,
    )
    assert train(args).status == "done"
    model, processor = load_pretrained(tmp_path / "out")
    assert processor.template.name == get_stage(stage).template
    after = model.state_dict()
    assert after.keys() == before.keys()
    groups = set(get_stage(stage).train)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    expected = {name for name in before if parameter_group(name) in groups}
    if get_stage(stage).template == "qwen2" and "moe" in groups:
        # In the chat format no image position is supervised (the image is followed by masked user text), so the
        # last layer's vision twins that only shape image-position outputs get no gradient; K/V still do.
        last = f"model.layers.{model.config.num_hidden_layers - 1}."
        unreachable = {
            n
            for n in expected
            if n.startswith(last)
            and "moe_" in n
            and not any(part in n for part in ("moe_k_proj", "moe_v_proj", "moe_input_layernorm"))
        }
        assert len(unreachable) == 7  # q (weight, bias), o, MLP (3), post-attention norm
        expected -= unreachable
    assert changed == expected
    flags = {
        g: getattr(model.config, f) for g, f in (("vision_tower", "tune_VE"), ("moe", "tune_MOE"), ("llm", "tune_LLM"))
    }
    assert flags == {group: group in groups for group in flags}
