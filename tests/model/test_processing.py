"""Prompt format, image placeholder splicing and label masking, against the official strings."""

import pytest
from PIL import Image

from model.constants import IGNORE_INDEX
from model.processing_eve import EveProcessor
from model.train.data import tokenize_conversation
from model.train.tokenizer import train_tokenizer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)


def _turns(*texts: str) -> list[dict]:
    """A conversation of alternating user and assistant messages, the user's first."""
    return [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(texts)]


def test_single_turn_prompt_is_the_official_string(tiny):
    _, processor = tiny
    prompt = processor.build_prompt([{"role": "user", "content": "<|image_pad|>\nWhat is written here?"}])
    assert prompt == SYSTEM + " USER: <|image_pad|>\nWhat is written here? ASSISTANT:"


def test_multi_turn_prompt_is_the_official_string(tiny):
    _, processor = tiny
    messages = _turns("<|image_pad|>\nQ1", "A1", "Q2")
    assert (
        processor.build_prompt(messages)
        == SYSTEM + " USER: <|image_pad|>\nQ1 ASSISTANT: A1<|im_end|>USER: Q2 ASSISTANT:"
    )
    finished = messages + [{"role": "assistant", "content": "A2"}]
    assert processor.build_prompt(finished, add_generation_prompt=False) == (
        SYSTEM + " USER: <|image_pad|>\nQ1 ASSISTANT: A1<|im_end|>USER: Q2 ASSISTANT: A2<|im_end|>"
    )


def test_image_placeholder_is_spliced_like_the_official_tokenisation(tiny):
    _, processor = tiny
    tokenizer = processor.tokenizer
    image = Image.new("RGB", (64, 64))  # 4 x 4 patches of 16 px -> 1 + 4 * 5 = 21 tokens
    inputs = processor(text="before <|image_pad|>\nafter", images=[image])
    ids = inputs["input_ids"][0].tolist()
    flags = inputs["mm_token_type_ids"][0].tolist()
    before = tokenizer("before ", add_special_tokens=False)["input_ids"]
    after = tokenizer("\nafter", add_special_tokens=False)["input_ids"]
    assert ids == before + [processor.image_token_id] * 21 + after
    assert flags == [0] * len(before) + [1] * 21 + [0] * len(after)
    assert inputs["pixel_values"][0].shape == (3, 64, 64)


def test_several_images_in_one_prompt_and_a_padded_batch(tiny):
    _, processor = tiny
    images = [Image.new("RGB", (64, 64)), Image.new("RGB", (128, 32)), Image.new("RGB", (32, 128))]
    inputs = processor(text=["<|image_pad|><|image_pad|> two", "<|image_pad|> one"], images=[images[:2], images[2:]])
    assert len(inputs["pixel_values"]) == 3
    counts = inputs["mm_token_type_ids"].sum(1).tolist()
    expected = [processor.count_image_tokens(p) for p in inputs["pixel_values"]]
    assert counts == [expected[0] + expected[1], expected[2]]
    # Left padding: the shorter prompt starts with padding that attention ignores.
    length = inputs["input_ids"].shape[1]
    short = processor(text="<|image_pad|> one", images=images[2:])["input_ids"][0]
    assert inputs["attention_mask"][1].tolist() == [0] * (length - len(short)) + [1] * len(short)
    assert inputs["input_ids"][1, length - len(short) :].tolist() == short.tolist()
    assert inputs["attention_mask"][0].all()


def test_placeholder_and_image_counts_must_match(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="placeholders"):
        processor(text="<|image_pad|> and <|image_pad|>", images=[Image.new("RGB", (32, 32))])
    with pytest.raises(ValueError, match="placeholders"):
        processor(text="no image here", images=[Image.new("RGB", (32, 32))])


def test_label_masking_supervises_only_answers_and_turn_ends(tiny):
    _, processor = tiny
    messages = _turns("<|image_pad|>\nwhat is written here", "hello world", "describe image", "a red circle")
    example = tokenize_conversation(processor, messages, [Image.new("RGB", (64, 64))])
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) == len(example["mm_token_type_ids"])
    supervised = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(supervised) == " hello world<|im_end|> a red circle<|im_end|>"
    assert all(label == IGNORE_INDEX for label, flag in zip(labels, example["mm_token_type_ids"]) if flag)
    # The context part tokenises exactly like the inference prompt of the first turn.
    prompt = processor(text=processor.build_prompt(messages[:1]), images=[Image.new("RGB", (64, 64))])
    n = prompt["input_ids"].shape[1]
    assert ids[:n] == prompt["input_ids"][0].tolist()


def test_plain_template_supervises_the_caption_and_newline(tiny):
    from model import EveProcessor

    _, processor = tiny
    plain = EveProcessor(processor.tokenizer, processor.image_processor, template="plain")
    messages = [
        {"role": "user", "content": "<|image_pad|>\nignored instruction"},
        {"role": "assistant", "content": "a cat"},
    ]
    example = tokenize_conversation(plain, messages, [Image.new("RGB", (32, 32))])
    supervised = [i for i, label in zip(example["input_ids"], example["labels"]) if label != IGNORE_INDEX]
    assert plain.tokenizer.decode(supervised) == "a cat\n"
    assert sum(example["mm_token_type_ids"]) == len(example["input_ids"]) - len(supervised)


def test_spelled_answers_supervise_one_character_per_token_and_decode_the_same(tiny):
    _, processor = tiny
    messages = [
        {"role": "user", "content": "<|image_pad|>\nread it"},
        {"role": "assistant", "content": "station café Hello\nworld"},
    ]
    image = Image.new("RGB", (64, 64))
    spelled = tokenize_conversation(processor, messages, [image], spell_answers=True)
    merged = tokenize_conversation(processor, messages, [image])
    answer = [i for i, label in zip(spelled["input_ids"], spelled["labels"]) if label != IGNORE_INDEX]
    tokens = processor.tokenizer.convert_ids_to_tokens(answer)
    assert tokens[tokens.index("<|im_end|>") - 5 :] == ["w", "o", "r", "l", "d", "<|im_end|>"]
    assert all(len(t) == 1 for t in tokens if t != "<|im_end|>")  # byte-level: one symbol per character
    assert processor.tokenizer.decode(answer) == processor.tokenizer.decode(
        [i for i, label in zip(merged["input_ids"], merged["labels"]) if label != IGNORE_INDEX]
    )
    context = [i for i, label in zip(spelled["input_ids"], spelled["labels"]) if label == IGNORE_INDEX]
    assert context == [i for i, label in zip(merged["input_ids"], merged["labels"]) if label == IGNORE_INDEX]


def test_whole_words_stay_one_token_and_only_where_they_stand_alone(tiny):
    _, processor = tiny
    tokenizer = train_tokenizer([" red circle blue"] * 50, vocab_size=300)
    whole = ["red", "circle", "blue"]
    assert all("\u0120" + w in tokenizer.get_vocab() for w in whole)
    closed = EveProcessor(tokenizer, processor.image_processor, whole_words=whole)
    plain = EveProcessor(tokenizer, processor.image_processor)
    text = " top: red circle. reddish redcircle"
    ids = closed.spell(text)
    tokens = closed.tokenizer.convert_ids_to_tokens(ids)
    for word in whole:
        assert tokens.count("\u0120" + word) == text.count(" " + word + " ") + text.count(" " + word + ".")
    assert "".join(tokens).replace("\u0120", " ") == text  # everything else one character per token
    assert closed.tokenizer.decode(ids) == plain.tokenizer.decode(plain.spell(text)) == text
    assert len(ids) == len(plain.spell(text)) - len(" red") - len(" circle") + 2


def test_whole_words_are_saved_with_the_processor(tiny, tmp_path):
    model, processor = tiny
    closed = EveProcessor(processor.tokenizer, processor.image_processor, whole_words=["red", "blue"])
    closed.save_pretrained(tmp_path)
    again = EveProcessor.from_pretrained(tmp_path, model.config)
    assert again.whole_words == ("blue", "red") and again.spell(" red") == closed.spell(" red")
