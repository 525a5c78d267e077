"""The pieces one training run is assembled from: accelerator, model, data feeds, optimizer and schedule.

Data is fed by plans the loop can resume exactly. A file dataset is shuffled once per epoch with a permutation
seeded by (seed, epoch) and dealt round-robin to the processes; every optimizer step consumes `batch_size *
grad_accum` samples per process, so a checkpoint at step s restarts at sample `s mod steps_per_epoch` of the same
permutation. A synthetic stream restarts at the global sample index where the run stopped.
"""

import logging
import math
from collections.abc import Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType
from torch.utils.data import DataLoader, Dataset
from transformers import get_cosine_schedule_with_warmup

from ..loading import default_attn_implementation
from ..modeling_eve import EveForCausalLM
from ..processing_eve import EveProcessor
from .args import TrainArgs
from .build import build_from_scratch, load_base
from .checkpoints import TrainerState
from .data import Collator, Encoder, LlavaDataset, load_records, split_records, worker_init
from .stages import Stage, image_size_for
from .streaming import SyntheticEvalSet, SyntheticStream

logger = logging.getLogger(__name__)


def make_accelerator(args: TrainArgs) -> Accelerator:
    """An Accelerator for the launch configuration; DDP tolerates parameters a batch does not reach."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.grad_accum,
        mixed_precision="bf16" if args.bf16 else None,  # None: whatever `accelerate launch` was configured with
        # Without a GPU, run on the CPU; processes started by `accelerate launch` then form a gloo process group.
        cpu=args.cpu or not torch.accelerator.is_available(),
        # Vision weights get no gradient from a text-only batch (and twins none from a batch without images).
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        # The schedule below counts optimizer steps; accelerate must not step it once per process.
        step_scheduler_with_optimizer=False,
    )
    if accelerator.state.deepspeed_plugin is not None:
        # The data loaders are not prepared by accelerate (we shard them), so DeepSpeed needs the batch size here.
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = args.batch_size
    return accelerator


def shards_weights(accelerator: Accelerator) -> bool:
    """Whether the launch configuration shards the weights themselves (FSDP, DeepSpeed ZeRO-3)."""
    plugin = accelerator.state.deepspeed_plugin
    return accelerator.distributed_type == DistributedType.FSDP or (plugin is not None and plugin.zero_stage == 3)


def build_model(args: TrainArgs, stage: Stage, device: torch.device) -> tuple[EveForCausalLM, EveProcessor]:
    """fp32 master weights (mixed precision casts on the fly); vision twins as the stage needs them; under QLoRA the
    base's linear layers in 4-bit nf4 on the training device."""
    attn = default_attn_implementation(str(device))
    if args.base:
        quantization = "4bit" if args.method == "qlora" else None
        return load_base(
            args.base, stage, dtype=torch.float32, attn_implementation=attn, quantization=quantization, device=device
        )
    return build_from_scratch(
        str(args.from_scratch), str(args.tokenizer), stage, dtype=torch.float32, attn_implementation=attn
    )


def keep_trainable_weights_in_the_graph(model: torch.nn.Module) -> None:
    """Makes a batch that reaches no trainable weight (a text-only batch while only vision weights train) still give
    a loss with a gradient: zero times the sum of the trainable weights is added to it.

    This happens inside the model's forward (a forward hook), where DDP looks for used parameters, so every process
    runs backward and joins the gradient all-reduce; the same term added outside forward would break DDP. The
    official code gets the same effect by running a dummy image through the patch embedding.
    """
    params = [p for p in model.parameters() if p.requires_grad]

    def hook(module, args, kwargs, output):
        loss = output.get("loss")
        if loss is not None and torch.is_grad_enabled() and not loss.requires_grad:
            output["loss"] = loss + sum(p.sum() for p in params) * 0.0
        return output

    model.register_forward_hook(hook, with_kwargs=True)


def make_optimizer(model: torch.nn.Module, args: TrainArgs, stage: Stage, total_steps: int):
    """AdamW over the trainable parameters and a cosine schedule with linear warm-up (the official recipe).

    With `patch_embedding_lr`, the patch embedding layer (`model.vision_tower`) gets its own learning rate: trained
    from scratch at the decoder's rate, its output norm grew from about 2 to 500-1,000 in 2,000 steps (text
    embeddings stay near 0.4) and solid colours came out at cosine 0.998 to each other, which the decoder's RMSNorm
    cannot tell apart.
    """
    lr = args.lr or stage.lr  # `TrainArgs.with_defaults` fills it; the preset is the last word
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    own_rate = args.patch_embedding_lr is not None
    patch = [p for name, p in named if own_rate and "vision_tower." in name]
    rest = [p for name, p in named if not (own_rate and "vision_tower." in name)]
    groups = [{"params": rest}] + ([{"params": patch, "lr": args.patch_embedding_lr}] if patch else [])
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, args.adam_beta2), weight_decay=args.weight_decay)
    warmup = math.ceil(total_steps * args.warmup_ratio)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


@dataclass
class Feed:
    """Training batches of one process, resumable from a TrainerState."""

    dataset: Dataset
    collator: Collator
    args: TrainArgs
    rank: int
    world_size: int

    @property
    def samples_per_step(self) -> int:
        """Samples one process consumes per optimizer step."""
        return self.args.batch_size * self.args.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the dataset (0 for an endless stream)."""
        if isinstance(self.dataset, SyntheticStream):
            return 0
        steps = _size(self.dataset) // (self.samples_per_step * self.world_size)
        if steps == 0:
            raise ValueError(
                f"{_size(self.dataset)} training samples are fewer than one optimizer step needs "
                f"({self.world_size} processes x batch {self.args.batch_size} x grad-accum {self.args.grad_accum})"
            )
        return steps

    def loader(self, dataset: Dataset, sampler=None) -> DataLoader:
        workers = self.args.num_workers
        return DataLoader(
            dataset,
            batch_size=self.args.batch_size,
            sampler=sampler,
            collate_fn=self.collator,
            num_workers=workers,
            worker_init_fn=worker_init if workers else None,
            persistent_workers=False,
        )

    def micro_batches(self, state: TrainerState) -> Iterator[dict]:
        """Endless micro-batches from the position `state` describes."""
        if isinstance(self.dataset, SyntheticStream):
            self.dataset.start = state.samples_seen
            yield from self.loader(self.dataset)
            return
        epoch, skip = state.epoch, state.step_in_epoch * self.samples_per_step
        per_epoch = self.steps_per_epoch * self.samples_per_step
        while True:
            order = torch.randperm(
                _size(self.dataset), generator=torch.Generator().manual_seed(self.args.seed + epoch)
            )
            indices = order[self.rank :: self.world_size][:per_epoch].tolist()
            yield from self.loader(self.dataset, indices[skip:])
            epoch, skip = epoch + 1, 0


def _size(dataset: Dataset) -> int:
    """Samples in a map-style dataset (torch's `Dataset` type declares no `__len__`)."""
    return len(cast(Sized, dataset))


def make_encoder(args: TrainArgs, stage: Stage, processor: EveProcessor) -> Encoder:
    size = image_size_for(stage, processor.image_processor.max_size, args.max_image_size)
    return Encoder(
        processor,
        max_image_size=size,
        max_length=args.max_length,
        spell_answers=bool(args.spell_answers),
        image_resize=args.image_resize or ("train" if args.synthetic else "inference"),
    )


def make_datasets(args: TrainArgs, encoder: Encoder, rank: int, world_size: int) -> tuple[Dataset, Dataset | None]:
    """(training dataset, evaluation dataset or None) for files (`--data`) or a synthetic stream."""
    if args.synthetic:
        train = SyntheticStream(
            args.synthetic,
            args.seed,
            args.synthetic_level,
            encoder,
            rank,
            world_size,
            run_samples=(args.max_steps or 0)
            * args.batch_size
            * args.grad_accum
            * world_size,  # set: TrainArgs checks
            curriculum=args.curriculum,
            made_up_words=args.made_up_words,
            spread=(args.placement_spread[0], args.placement_spread[1]),
            fixed_place_share=args.fixed_place_share,
            ocr_jitter=(args.ocr_jitter[0], args.ocr_jitter[1]),
            ocr_jitter_ramp=args.ocr_jitter_ramp,
            ocr_visitor_share=args.ocr_visitor_share,
            ocr_visitor_fonts=args.ocr_visitor_fonts,
            ocr_visitor_spread=(args.ocr_visitor_spread[0], args.ocr_visitor_spread[1]),
            ocr_visitor_size_spread=(
                (args.ocr_visitor_size_spread[0], args.ocr_visitor_size_spread[1])
                if args.ocr_visitor_size_spread
                else None
            ),
            ocr_visitor_anchor_share=args.ocr_visitor_anchor_share,
            ocr_visitor_small_share=args.ocr_visitor_small_share,
            ocr_visitor_canvas_share=args.ocr_visitor_canvas_share,
            layout_mix=args.layout_mix,
            texture_share=args.texture_share,
        )
        evaluation = SyntheticEvalSet(args.synthetic, args.seed, args.synthetic_level, encoder, args.eval_samples)
        return train, (evaluation if args.eval_samples > 0 else None)
    records = load_records([Path(p) for p in args.data], args.image_folder)
    train_records, eval_records = split_records(records, args.eval_split, args.eval_samples, args.seed)
    logger.info("Data: %d training and %d evaluation samples", len(train_records), len(eval_records))
    return LlavaDataset(train_records, encoder), (LlavaDataset(eval_records, encoder) if eval_records else None)


def eval_loader(feed: Feed, dataset: Dataset | None) -> DataLoader | None:
    """Evaluation batches of this process; every process gets the same number (collectives stay in step)."""
    if dataset is None:
        return None
    per_rank = _size(dataset) // feed.world_size
    if per_rank == 0:
        return None
    return feed.loader(dataset, list(range(feed.rank, per_rank * feed.world_size, feed.world_size)))


def total_steps(args: TrainArgs, feed: Feed) -> int:
    if args.max_steps:
        return args.max_steps
    return max(1, math.ceil(feed.steps_per_epoch * args.epochs))


def to_device(batch: dict, device: torch.device) -> dict:
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items() if key != "pixel_values"}
    moved["pixel_values"] = [pixels.to(device, non_blocking=True) for pixels in batch["pixel_values"]]
    return moved
