"""The training loop on HF accelerate: one stage, resumable, stoppable by SIGTERM/SIGINT.

    from model.train.args import parse_args
    from model.train.loop import train
    train(parse_args(["--base", "ckpt", "--stage", "3", "--data", "data.json", "--output-dir", "out"]))

Per optimizer step: `grad_accum` micro-batches under `accelerator.accumulate`, gradient clipping, AdamW, the cosine
schedule. The only host syncs are at logging, evaluation and checkpoint steps (and, with several processes, one
tiny all-reduce per step so that every process agrees on a stop signal).
"""

import itertools
import json
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..compat import enable_activation_checkpointing
from ..constants import IGNORE_INDEX
from ..loading import resolve_checkpoint
from ..processing_eve import EveProcessor
from . import recipe
from .args import TrainArgs
from .checkpoints import (
    STATE_FILE,
    TrainerState,
    carry_base_files,
    is_finished,
    load_trainer_state,
    remove_checkpoints,
    resolve_resume,
    save_checkpoint,
)
from .data import Collator
from .methods import apply_method, is_adapter_model
from .metrics import Clock, MetricsLog
from .stages import Stage, get_stage, official_flags

logger = logging.getLogger(__name__)


class StopRequest:
    """Turns SIGTERM/SIGINT into a request to stop after the current step (handlers restored on exit)."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second signal: stop now, the usual way (KeyboardInterrupt, exit)
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signal_name = signal.Signals(signum).name
        logger.warning("Received %s: stopping after the current step (send it again to stop now)", self.signal_name)

    def requested(self, accelerator: Accelerator) -> bool:
        """Whether any process was signalled (all processes must stop at the same step)."""
        local = self.signal_name is not None
        if accelerator.num_processes == 1:
            return local
        flag = torch.tensor(float(local), device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


@dataclass
class RunResult:
    status: str  # "done" or "stopped"
    step: int
    output_dir: Path
    checkpoint: Path | None = None


@dataclass
class Run:
    """One session of a training run: the prepared objects and the progress state."""

    args: TrainArgs
    stage: Stage
    accelerator: Accelerator
    model: torch.nn.Module
    processor: EveProcessor
    optimizer: torch.optim.Optimizer
    scheduler: Any  # as accelerate wraps it
    feed: recipe.Feed
    eval_batches: Any  # as accelerate wraps it; None without an evaluation set
    state: TrainerState
    metrics: MetricsLog
    clock: Clock = field(init=False)

    def __post_init__(self):
        self.clock = Clock(self.state.elapsed_s, self.state.step)
        self.output_dir = Path(self.args.output_dir)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def train_step(self, micro_batches) -> torch.Tensor:
        """One optimizer step over `grad_accum` micro-batches; returns the mean micro-batch loss (no host sync)."""
        accelerator, total = self.accelerator, torch.zeros((), device=self.accelerator.device)
        for batch in micro_batches:
            with accelerator.accumulate(self.model):
                loss = self.model(**recipe.to_device(batch, accelerator.device), use_cache=False).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and self.args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(self.params, self.args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
        self.scheduler.step()
        return total / self.args.grad_accum

    @torch.no_grad()
    def evaluate(self) -> float:
        """Loss over the held-out set, weighted by supervised tokens and summed over processes."""
        self.model.eval()
        sums = torch.zeros(2, device=self.accelerator.device)
        for batch in self.eval_batches:
            batch = recipe.to_device(batch, self.accelerator.device)
            loss = self.model(**batch, use_cache=False).loss
            tokens = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()  # the loss shifts labels by one
            sums += torch.stack([loss.float() * tokens, tokens.float()])
        self.model.train()
        sums = self.accelerator.reduce(sums, reduction="sum")
        return (sums[0] / sums[1].clamp(min=1)).item()

    def log(self, loss_sum: torch.Tensor, loss_steps: int, evaluated: bool, bar: tqdm) -> None:
        loss = self.accelerator.reduce(loss_sum / max(loss_steps, 1), reduction="mean").item()
        state = self.state
        record = {
            "step": state.step,
            "total_steps": state.total_steps,
            "epoch": round(state.fractional_epoch, 4),
            "loss": round(loss, 6),
            "lr": self.scheduler.get_last_lr()[0],
            **self.clock.mark(state.step, state.total_steps, self.feed.samples_per_step * self.feed.world_size),
        }
        if evaluated and state.eval_loss is not None:
            record["eval_loss"] = round(state.eval_loss, 6)
        self.metrics.write(record)
        bar.set_postfix(loss=f"{loss:.4f}", **({"eval": f"{state.eval_loss:.4f}"} if evaluated else {}))

    def checkpoint(self) -> Path:
        self.state.elapsed_s = self.clock.elapsed
        return save_checkpoint(self.accelerator, self.output_dir, self.state, self.args.keep_checkpoints)

    def loop(self, stop: StopRequest) -> RunResult:
        args, state = self.args, self.state
        micro = self.feed.micro_batches(state)
        bar = tqdm(
            total=state.total_steps,
            initial=state.step,
            desc=f"stage {self.stage.name}",
            disable=not self.accelerator.is_main_process,
            dynamic_ncols=True,
        )
        loss_sum, loss_steps = torch.zeros((), device=self.accelerator.device), 0
        end = min(state.total_steps, args.end_at_step or state.total_steps)  # the schedule still spans total_steps
        if state.step < end and stop.requested(self.accelerator):
            bar.close()
            return RunResult("stopped", state.step, self.output_dir)  # signalled during setup: nothing new to save
        while state.step < end:
            loss_sum += self.train_step(itertools.islice(micro, args.grad_accum))
            loss_steps += 1
            state.step += 1
            state.samples_seen += self.feed.samples_per_step * self.feed.world_size
            bar.update(1)
            stopping = stop.requested(self.accelerator) or state.step == args.stop_at_step
            last = state.step == end
            evaluated = self.eval_batches is not None and (
                last or bool(args.eval_every and state.step % args.eval_every == 0)
            )
            if evaluated:
                state.eval_loss = self.evaluate()
            if evaluated or stopping or last or state.step % max(args.log_every, 1) == 0:
                self.log(loss_sum, loss_steps, evaluated, bar)
                loss_sum.zero_()
                loss_steps = 0
            if stopping and not last:
                bar.close()
                return RunResult("stopped", state.step, self.output_dir, self.checkpoint())
            if args.save_every and state.step % args.save_every == 0 and not last:
                self.checkpoint()
        bar.close()
        return RunResult("done", state.step, self.output_dir)

    def report(self, result: RunResult, signal_name: str | None) -> None:
        """The closing log line and the last metrics.jsonl event ("done" or "stopped")."""
        state = self.state
        event = {"step": state.step, "total_steps": state.total_steps, "elapsed_s": round(self.clock.elapsed, 2)}
        if result.status == "stopped":
            reason = f"by signal {signal_name}" if signal_name else f"at step {state.step} (--stop-at-step)"
            if result.checkpoint is None:
                logger.info("Stopped %s before the first step, nothing new to save", reason)
            else:
                logger.info("Stopped %s, checkpoint saved at %s", reason, result.checkpoint)
            checkpoint = str(result.checkpoint) if result.checkpoint else None
            self.metrics.write({"event": "stopped", **event, "checkpoint": checkpoint})
        else:
            logger.info("Done: %d steps, model saved in %s", state.step, self.output_dir)
            self.metrics.write(
                {"event": "done", **event, "eval_loss": state.eval_loss, "output_dir": str(self.output_dir)}
            )

    def save_final(self) -> None:
        """The trained model and processor, loadable with `load_pretrained(output_dir)`: a full checkpoint, or under
        LoRA the adapter alone (adapter_config.json naming the base, adapter_model.safetensors). The base's tasks and
        fine-tuning defaults travel along (`CARRIED_FILES`), so a job started from this one trains the same way."""
        self.accelerator.wait_for_everyone()
        state_dict = self.accelerator.get_state_dict(self.model)  # gathers sharded weights; all processes call it
        if self.accelerator.is_main_process:
            model: Any = self.accelerator.unwrap_model(self.model)
            if is_adapter_model(model):
                for config in model.peft_config.values():
                    config.base_model_name_or_path = base_reference(str(self.args.base))
                model.save_pretrained(str(self.output_dir), state_dict=state_dict)  # peft keeps the adapter's keys
            else:
                for key, value in official_flags(self.stage).items():
                    setattr(model.config, key, value)
                model.save_pretrained(str(self.output_dir), state_dict=state_dict)
            self.processor.save_pretrained(self.output_dir)
            if self.args.base:
                carry_base_files(resolve_checkpoint(self.args.base), self.output_dir)
            self.state.elapsed_s = self.clock.elapsed
            final = {**self.state.to_dict(), "finished": True}
            (self.output_dir / STATE_FILE).write_text(json.dumps(final, indent=2) + "\n")
        self.accelerator.wait_for_everyone()


def base_reference(base: str) -> str:
    """How an adapter names its base: an absolute folder (the job may run from another directory), or a Hub id."""
    path = Path(base).expanduser()
    return str(path.resolve()) if path.is_dir() else base


def prepare_run(args: TrainArgs, accelerator: Accelerator) -> Run:
    """Builds everything, restores a checkpoint if resuming, and writes run_args.json (with every default filled)."""
    args = args.with_defaults(resolve_checkpoint(args.base) if args.base else None)
    stage, output_dir = get_stage(args.stage), Path(args.output_dir)
    checkpoint = resolve_resume(args.resume, output_dir)
    state = load_trainer_state(checkpoint) if checkpoint else TrainerState(stage=stage.name)
    set_seed(args.seed)
    if args.method == "qlora" and recipe.shards_weights(accelerator):
        raise ValueError(
            "--method qlora keeps the 4-bit base whole on each device: use DDP or ZeRO-2, not FSDP/ZeRO-3"
        )
    base_model, processor = recipe.build_model(args, stage, accelerator.device)
    model = apply_method(base_model, args, stage)
    recipe.keep_trainable_weights_in_the_graph(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    logger.info(
        "Stage %s (%s): %d of %d parameter tensors trainable",
        stage.name,
        args.method,
        len(trainable),
        len(list(model.parameters())),
    )
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    encoder = recipe.make_encoder(args, stage, processor)
    rank, world = accelerator.process_index, accelerator.num_processes
    train_set, eval_set = recipe.make_datasets(args, encoder, rank, world)
    feed = recipe.Feed(train_set, Collator(processor), args, rank, world)
    state.total_steps, state.steps_per_epoch = recipe.total_steps(args, feed), feed.steps_per_epoch
    optimizer, scheduler = recipe.make_optimizer(model, args, stage, state.total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None and args.resume == "none":
            remove_checkpoints(output_dir)
        (output_dir / "run_args.json").write_text(args.to_json())
    accelerator.wait_for_everyone()
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("Resumed from %s at step %d", checkpoint, state.step)
    metrics = MetricsLog(output_dir, accelerator.is_main_process)
    metrics.start(state.step if checkpoint else None)
    eval_batches = recipe.eval_loader(feed, eval_set)
    return Run(args, stage, accelerator, model, processor, optimizer, scheduler, feed, eval_batches, state, metrics)


def train(args: TrainArgs) -> RunResult:
    """Runs (or resumes) one stage; returns "done" with the final model saved, or "stopped" with a checkpoint."""
    if args.resume == "auto" and is_finished(args.output_dir):  # a finished run is not repeated
        logger.info(
            "%s already holds the finished model; nothing to do (use --resume none to retrain)", args.output_dir
        )
        return RunResult("done", -1, Path(args.output_dir))
    # Signals are handled from the start: one during setup stops the run before its first step.
    with StopRequest() as stop:
        accelerator = recipe.make_accelerator(args)
        run = prepare_run(args, accelerator)
        state = run.state
        logger.info(
            "Training: %d steps (%d per epoch), %d samples per step on %d process(es), device %s",
            state.total_steps,
            state.steps_per_epoch,
            run.feed.samples_per_step * run.feed.world_size,
            run.feed.world_size,
            accelerator.device,
        )
        result = run.loop(stop)
        if result.status == "done":  # the final save is covered too: a signal there asks for what happens anyway
            run.save_final()
    run.report(result, stop.signal_name)
    return result
