"""Evaluate a model on held-out synthetic samples: greedy answers, parsed and scored per task.

Held-out means another seed than training and the `test` split of the word list (words no training sample uses).
"""

from typing import Unpack

import torch

from ..shared import from_llava
from ..synthetic import SampleOptions, iter_samples
from .metrics import MAIN_METRIC, aggregate, score_sample

EVAL_SEED = 20_250_212  # training streams use other seeds


def answer_batch(model, processor, samples: list, max_new_tokens: int) -> list[str]:
    """Greedy answers to each sample's first question, generated as one left-padded batch."""
    messages = [[{"role": "user", "content": from_llava(s.conversations[0]["value"])}] for s in samples]
    return answer_messages(model, processor, messages, [[s.image] for s in samples], max_new_tokens)


def answer_messages(
    model, processor, conversations: list[list[dict]], images: list[list], max_new_tokens: int
) -> list[str]:
    """Greedy answers to conversations (processor messages, their images in placeholder order), as the chat builds
    the prompt and resizes the images, generated as one left-padded batch."""
    prompts = [processor.build_prompt(messages) for messages in conversations]
    inputs = processor(text=prompts, images=images if any(images) else None)
    with torch.inference_mode():
        ids = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return [
        text.strip()
        for text in processor.batch_decode(ids[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    ]


def evaluate_task(
    model,
    processor,
    task: str,
    n: int,
    level,
    seed: int = EVAL_SEED,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    **options: Unpack[SampleOptions],
) -> dict:
    """Scores of `n` held-out samples of one task: the aggregate, and the first few answers for inspection.

    `options` draw the samples as `model.synthetic.generate_sample` documents: `spread` limits where text is placed,
    as in training (`--placement-spread`; 1, the default, is anywhere), others draw OCR off the patch grid or visitor
    style, a faint texture, held-out layouts... The words are always the held-out ones.
    """
    held_out: SampleOptions = {**options, "split": "test"}
    stream = iter_samples([task], seed=seed, level=level, **held_out)
    metrics, examples = evaluate_samples(
        model, processor, task, [next(stream) for _ in range(n)], batch_size, max_new_tokens
    )
    return {
        "task": task,
        "level": level,
        "spread": options.get("spread", 1.0),
        "metrics": metrics,
        "examples": examples,
    }


def evaluate_samples(
    model, processor, task: str, samples: list, batch_size: int = 16, max_new_tokens: int = 96
) -> tuple[dict, list[dict]]:
    """(aggregate scores, the first five answers) of the model on given samples of one task."""
    scores: list[dict[str, float]] = []
    examples: list[dict] = []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        for sample, answer in zip(batch, answer_batch(model, processor, batch, max_new_tokens)):
            scores.append(score_sample(task, answer, sample.target))
            if len(examples) < 5:
                examples.append({"expected": sample.answer, "answer": answer})
    return aggregate(task, scores), examples


def format_table(results: list[dict]) -> str:
    lines = [f"{'task':8s} {'levels':6s} {'spread':6s} {'n':>4s}  {'main':>12s}  other metrics"]
    for result in results:
        metrics, task = result["metrics"], result["task"]
        main = MAIN_METRIC[task]
        level = result.get("level", "")
        levels = ",".join(map(str, level)) if isinstance(level, (list, tuple)) else str(level)
        spread = result.get("variant") or f"{result.get('spread', 1.0):g}"
        others = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k not in (main, "n"))
        lines.append(f"{task:8s} {levels:6s} {spread:6s} {int(metrics['n']):4d}  {main} {metrics[main]:.3f}  {others}")
    return "\n".join(lines)
