"""Command-line arguments of `python -m model.train`, parsed into one typed `TrainArgs` (the loop never sees argparse).

Defaults follow the official recipe (AdamW without weight decay, cosine schedule with 3% warm-up, gradient clipping
at 1.0, one epoch); the learning rate defaults to the stage preset's.
"""

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..shared import RESIZE_MODES, TRAIN_DEFAULTS, TRAIN_METHODS, finetune_defaults
from .stages import get_stage, load_stages

logger = logging.getLogger(__name__)

# LoRA targets by group: the attention projections and the MLP of every decoder layer, text weights and vision twins
# alike (which of the two a run adapts follows its stage's groups).
LORA_TARGET_GROUPS = {
    "attention": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
# Options a checkpoint's `finetune_defaults.json` may set, and what they are when neither it nor the command line does
# (the learning rate then comes from the stage preset).
BUILT_IN_DEFAULTS: dict[str, Any] = {
    "spell_answers": False,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_patch_embedding": False,
}
BASE_DEFAULT_FIELDS = ("lr", "patch_embedding_lr", "image_resize", *BUILT_IN_DEFAULTS)
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_patch_embedding")


@dataclass
class TrainArgs:
    """Everything one training run needs; `run_args.json` in the output folder is this, as JSON."""

    output_dir: str
    stage: str = TRAIN_DEFAULTS["stage"]
    base: str | None = None  # checkpoint folder or Hub id to start from
    from_scratch: str | None = None  # config JSON of a new model (needs `tokenizer`)
    tokenizer: str | None = None
    data: list[str] = field(default_factory=list)  # LLaVA JSON files
    image_folder: str | None = None
    synthetic: list[str] = field(default_factory=list)  # synthetic tasks streamed instead of files
    synthetic_level: list[int] = field(default_factory=lambda: [0])
    curriculum: bool = False  # open the synthetic levels one after another over the run
    made_up_words: float = 0.0  # share of synthetic training words replaced by random strings of letters and digits
    spell_answers: bool | None = None  # supervise answers one character per token (None: the base's default, else no)
    image_resize: str | None = None  # "inference" (the chat's rule) or "train" (official); None: inference for --data
    placement_spread: list[float] = field(default_factory=lambda: [1.0, 1.0])  # first and last, ramped over the run
    fixed_place_share: float = 0.0  # share of synthetic samples with grid text at its first free patch
    ocr_jitter: list[int] = field(default_factory=lambda: [0, 0])  # OCR pixel jitter off the grid, first and last
    ocr_jitter_ramp: float = 1.0  # share of the run over which --ocr-jitter moves from its first to its last value
    ocr_visitor_share: float = 0.0  # share of OCR samples drawn visitor style in the training fonts
    method: str = "full"  # "full", "lora" or "qlora": how the stage's groups learn
    lora_rank: int | None = None  # None: the base's default, else 8
    lora_alpha: int | None = None  # None: the base's default, else 16
    lora_dropout: float | None = None  # None: the base's default, else 0
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGET_GROUPS))
    lora_patch_embedding: bool | None = None  # train the patch embedding in full next to the adapters (vLLM refuses)
    lr: float | None = None  # None: the base's fine-tuning default, else the stage preset's learning rate
    patch_embedding_lr: float | None = (
        None  # None: --lr; the patch embedding layer's own rate (cf. LLaVA's mm_projector_lr)
    )
    epochs: float = TRAIN_DEFAULTS["epochs"]
    max_steps: int | None = None  # optimizer steps; overrides epochs, required for synthetic streams
    batch_size: int = TRAIN_DEFAULTS["batch_size"]  # per process, per micro-step
    grad_accum: int = TRAIN_DEFAULTS["grad_accum"]
    max_image_size: int | None = None  # None: the stage's low/high rule
    max_length: int | None = 4096  # image tokens included (official: 2048/4096 text tokens + the images)
    seed: int = TRAIN_DEFAULTS["seed"]
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # 0.95 steadies a small model trained from scratch at a high learning rate
    max_grad_norm: float = 1.0
    eval_split: float = TRAIN_DEFAULTS["eval_split"]
    eval_every: int = TRAIN_DEFAULTS["eval_every"]  # 0: evaluate only at the end (when there is an evaluation set)
    eval_samples: int = 64
    save_every: int = TRAIN_DEFAULTS["save_every"]
    keep_checkpoints: int = 2
    log_every: int = 10
    bf16: bool = False
    gradient_checkpointing: bool = False
    resume: str = "auto"  # "auto" (last checkpoint in output_dir, if any), "none", or a checkpoint folder
    num_workers: int = 0
    stop_at_step: int | None = None  # pause after this step with a checkpoint (resume later)
    end_at_step: int | None = None  # finish after this step (final model saved) with the schedule of max_steps
    cpu: bool = False  # force CPU even where an accelerator exists

    def __post_init__(self):
        if self.stage not in load_stages():
            raise ValueError(f"Unknown stage {self.stage!r}; choose one of {list(load_stages())}")
        if bool(self.base) == bool(self.from_scratch):
            raise ValueError("Give exactly one of --base (a checkpoint) or --from-scratch (a config JSON)")
        if self.from_scratch and not self.tokenizer:
            raise ValueError("--from-scratch needs --tokenizer (a tokenizer folder)")
        if bool(self.data) == bool(self.synthetic):
            raise ValueError("Give exactly one of --data (LLaVA JSON files) or --synthetic (task names)")
        if self.curriculum and not self.synthetic:
            raise ValueError("--curriculum orders synthetic levels: it needs --synthetic")
        if not 0.0 <= self.made_up_words <= 1.0:
            raise ValueError("--made-up-words is a share: give a value between 0 and 1")
        if self.made_up_words and not self.synthetic:
            raise ValueError("--made-up-words changes synthetic words: it needs --synthetic")
        self.placement_spread = [float(v) for v in self.placement_spread]
        if len(self.placement_spread) == 1:
            self.placement_spread *= 2
        if len(self.placement_spread) != 2 or not all(0.0 <= v <= 1.0 for v in self.placement_spread):
            raise ValueError("--placement-spread takes one share, or a first and a last share, each between 0 and 1")
        if not 0.0 <= self.fixed_place_share <= 1.0:
            raise ValueError("--fixed-place-share is a share between 0 and 1")
        if (self.placement_spread != [1.0, 1.0] or self.fixed_place_share) and not self.synthetic:
            raise ValueError("--placement-spread places synthetic text: it needs --synthetic")
        self.ocr_jitter = [int(v) for v in self.ocr_jitter]
        if len(self.ocr_jitter) == 1:
            self.ocr_jitter *= 2
        if len(self.ocr_jitter) != 2 or not all(0 <= v <= 16 for v in self.ocr_jitter):
            raise ValueError("--ocr-jitter takes one pixel count, or a first and a last, each between 0 and 16")
        if not 0.0 < self.ocr_jitter_ramp <= 1.0:
            raise ValueError("--ocr-jitter-ramp is a share of the run: give a value above 0 and at most 1")
        if not 0.0 <= self.ocr_visitor_share <= 1.0:
            raise ValueError("--ocr-visitor-share is a share between 0 and 1")
        if (self.ocr_jitter != [0, 0] or self.ocr_visitor_share) and not self.synthetic:
            raise ValueError("--ocr-jitter and --ocr-visitor-share draw synthetic OCR text: they need --synthetic")
        if self.synthetic and not self.max_steps:
            raise ValueError("A synthetic stream has no end: give --max-steps")
        if self.end_at_step is not None and not 0 < self.end_at_step <= (self.max_steps or self.end_at_step):
            raise ValueError("--end-at-step must be a step of the run (1 to --max-steps)")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("--batch-size and --grad-accum must be at least 1")
        if not 0.0 <= self.eval_split < 1.0:
            raise ValueError("--eval-split must be in [0, 1)")
        self._check_method()

    def _check_method(self) -> None:
        if self.method not in TRAIN_METHODS:
            raise ValueError(f"--method must be one of {list(TRAIN_METHODS)}, got {self.method!r}")
        if self.image_resize is not None and self.image_resize not in RESIZE_MODES:
            raise ValueError(f"--image-resize must be one of {list(RESIZE_MODES)}, got {self.image_resize!r}")
        if self.method == "full":
            given = [name for name in LORA_FIELDS if getattr(self, name) is not None]
            if given:
                flags = ", ".join("--" + name.replace("_", "-") for name in given)
                raise ValueError(f"{flags} set(s) LoRA adapters: add --method lora or --method qlora")
            return
        if self.from_scratch:
            raise ValueError(f"--method {self.method} adapts a trained model: use --base, or --method full")
        unknown = sorted(set(self.lora_targets) - set(LORA_TARGET_GROUPS))
        if unknown or not self.lora_targets:
            raise ValueError(f"--lora-targets takes groups among {list(LORA_TARGET_GROUPS)}, got {self.lora_targets}")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError("--lora-rank must be at least 1")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError("--lora-alpha must be positive")
        if self.lora_dropout is not None and not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError("--lora-dropout must be in [0, 1)")

    def with_defaults(self, base_folder: str | Path | None) -> "TrainArgs":
        """These arguments with every option left empty filled: from the base checkpoint's `finetune_defaults.json`
        when it has one, else from the built-in defaults and the stage preset (its learning rate).

        Raises:
            ValueError: the base's defaults file names an option that is not one of `BASE_DEFAULT_FIELDS`.
        """
        carried = finetune_defaults(base_folder) if base_folder else {}
        unknown = sorted(set(carried) - set(BASE_DEFAULT_FIELDS))
        if unknown:
            raise ValueError(
                f"{base_folder}/finetune_defaults.json sets unknown options {unknown}; known: {list(BASE_DEFAULT_FIELDS)}"
            )
        fallback = {
            **BUILT_IN_DEFAULTS,
            "lr": get_stage(self.stage).lr,
            "image_resize": "train" if self.synthetic else "inference",
        }
        filled = {}
        for name in BASE_DEFAULT_FIELDS:
            if getattr(self, name) is not None:
                continue
            if name in LORA_FIELDS and self.method == "full":
                continue  # no adapters: the LoRA options stay empty
            if name in carried:
                filled[name] = carried[name]
            elif name in fallback:
                filled[name] = fallback[name]
        from_base = sorted(set(filled) & set(carried))
        if from_base:
            logger.info("Options from the base's fine-tuning defaults: %s", {k: filled[k] for k in from_base})
        return dataclasses.replace(self, **filled)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainArgs":
        return cls(**json.loads(Path(path).read_text()))


def train_defaults() -> dict[str, Any]:
    """`TrainArgs`' default of each field: the parser takes its defaults from here, so they are written once."""
    defaults: dict[str, Any] = {}
    for spec in dataclasses.fields(TrainArgs):
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            defaults[spec.name] = spec.default_factory()
    return defaults


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train one EVEv2 stage (a pipeline is a sequence of runs: see python -m model.train.pipeline).",
    )
    source = parser.add_argument_group("model")
    source.add_argument("--base", help="checkpoint folder or Hub id to start from")
    source.add_argument("--from-scratch", metavar="CONFIG.json", help="build a new model from EveConfig fields")
    source.add_argument("--tokenizer", help="tokenizer folder for --from-scratch")
    source.add_argument("--stage", choices=list(load_stages()), help="stage preset (default %(default)s)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", action="extend", type=_comma_list, help="LLaVA JSON file(s)")
    data.add_argument("--image-folder", help="folder image paths are relative to (default: the JSON's folder)")
    data.add_argument("--synthetic", type=_comma_list, help="stream synthetic tasks: ocr,poster,...")
    data.add_argument(
        "--synthetic-level",
        type=lambda v: [int(x) for x in _comma_list(v)],
        help="curriculum level, or comma-separated levels to mix",
    )
    data.add_argument(
        "--curriculum",
        action="store_true",
        help="open the --synthetic-level values one after another over the run (easy first, then the full mix)",
    )
    data.add_argument(
        "--made-up-words",
        type=float,
        metavar="SHARE",
        help="share of synthetic training words replaced by random strings of letters and digits, so that words are "
        "read letter by letter rather than memorised (evaluation keeps real held-out words)",
    )
    data.add_argument(
        "--placement-spread",
        type=lambda v: [float(x) for x in _comma_list(v)],
        metavar="FIRST[,LAST]",
        help="share of the free room synthetic grid text is placed in: 0 always puts it at the first free patch, 1 "
        "anywhere (default); FIRST,LAST ramps linearly over the run. A small model learns glyphs with text at one "
        "place, then to find it with a ramp (`python -m model.evaluation --spread` measures it at any spread)",
    )
    data.add_argument(
        "--fixed-place-share",
        type=float,
        metavar="SHARE",
        help="share of synthetic samples whose grid text sits at the first free patch (spread 0), the rest at "
        "--placement-spread: glyphs at one place are learnt in a few hundred steps and anchor reading anywhere",
    )
    data.add_argument(
        "--ocr-jitter",
        type=lambda v: [int(x) for x in _comma_list(v)],
        metavar="FIRST[,LAST]",
        help="move synthetic OCR grid text off the patch grid by up to this many pixels each way (0 keeps it on the "
        "grid); FIRST,LAST ramps linearly over the first --ocr-jitter-ramp of the run. Samples at the fixed place "
        "(--fixed-place-share) stay on the grid, the anchor reading is learnt at",
    )
    data.add_argument(
        "--ocr-jitter-ramp",
        type=float,
        metavar="SHARE",
        help="share of the run over which --ocr-jitter reaches its last value (default 1: the whole run)",
    )
    data.add_argument(
        "--ocr-visitor-share",
        type=float,
        metavar="SHARE",
        help="share of synthetic OCR samples drawn visitor style: one of six training fonts, 16-48 px, at any pixel, "
        "dark on light or light on dark (evaluation uses two held-out fonts)",
    )
    data.add_argument(
        "--spell-answers",
        action=argparse.BooleanOptionalAction,
        help="tokenise answers one character per token instead of BPE pieces, so each output token lines up with one "
        "glyph (helps a small model learn to read; the decoded text is the same). Default: the base's fine-tuning "
        "default (the shipped model spells), else no",
    )
    data.add_argument("--max-image-size", type=int, help="image side (as area side**2); default: the stage's rule")
    data.add_argument(
        "--image-resize",
        choices=RESIZE_MODES,
        help="inference: every image rescaled to the model's area, as the chat sees it (default for --data); train: "
        "the official training rule, which only shrinks large images (default for --synthetic)",
    )
    data.add_argument(
        "--max-length", type=int, help="longest row in tokens, image tokens included (default %(default)s)"
    )
    data.add_argument("--num-workers", type=int, help="data-loader worker processes")
    method = parser.add_argument_group("method (the stage says which groups learn, the method how)")
    method.add_argument(
        "--method",
        choices=TRAIN_METHODS,
        help="full: every weight of the stage's groups; lora: low-rank adapters (peft) on their linear layers; qlora: "
        "the same on a 4-bit nf4 base (bitsandbytes). Default %(default)s",
    )
    method.add_argument("--lora-rank", type=int, help="adapter rank r (default: the base's, else 8)")
    method.add_argument("--lora-alpha", type=int, help="adapter scale alpha (default: the base's, else 16)")
    method.add_argument(
        "--lora-dropout", type=float, help="dropout on the adapters' input (default: the base's, else 0)"
    )
    method.add_argument(
        "--lora-targets",
        type=_comma_list,
        help=f"layer groups that get adapters, among {','.join(LORA_TARGET_GROUPS)} (default: both)",
    )
    method.add_argument(
        "--lora-patch-embedding",
        action=argparse.BooleanOptionalAction,
        help="also train the patch embedding in full where the stage trains it (peft modules_to_save); off by default: "
        "vLLM refuses adapters that carry it",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--lr", type=float, help="learning rate (default: the base's fine-tuning default, else the stage preset's)"
    )
    optim.add_argument(
        "--patch-embedding-lr",
        type=float,
        help="learning rate of the patch embedding layer (default: --lr); a lower rate keeps a model trained from "
        "scratch from blowing its image embeddings up until colours and glyphs look alike to the decoder",
    )
    optim.add_argument("--epochs", type=float)
    optim.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    optim.add_argument("--batch-size", type=int, help="samples per process per micro-step")
    optim.add_argument("--grad-accum", type=int, help="micro-steps per optimizer step")
    optim.add_argument("--warmup-ratio", type=float)
    optim.add_argument("--weight-decay", type=float)
    optim.add_argument("--adam-beta2", type=float, help="AdamW's second-moment decay")
    optim.add_argument("--max-grad-norm", type=float)
    optim.add_argument("--seed", type=int)
    optim.add_argument("--bf16", action="store_true", help="bf16 mixed precision")
    optim.add_argument("--gradient-checkpointing", action="store_true")
    optim.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    run = parser.add_argument_group("evaluation, checkpoints, logging")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--eval-split", type=float, help="fraction of --data held out for eval loss")
    run.add_argument("--eval-every", type=int, help="steps between evaluations (0: at the end only)")
    run.add_argument("--eval-samples", type=int, help="most evaluation samples (synthetic: held-out samples)")
    run.add_argument("--save-every", type=int, help="steps between checkpoints (0: none)")
    run.add_argument("--keep-checkpoints", type=int)
    run.add_argument("--log-every", type=int, help="steps between metrics.jsonl lines")
    run.add_argument("--resume", help="auto (last checkpoint in --output-dir), none, or a folder")
    run.add_argument("--stop-at-step", type=int, help="stop after this step with a checkpoint (resume later)")
    run.add_argument(
        "--end-at-step",
        type=int,
        help="finish the stage after this step (final model saved, stage done) while the learning-rate schedule "
        "spans --max-steps: a run cut short on purpose, reproducibly",
    )
    parser.set_defaults(**train_defaults())
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainArgs:
    """Command line -> TrainArgs; invalid combinations exit with the parser's usage message."""
    parser = build_parser()
    namespace = parser.parse_args(argv)
    try:
        return TrainArgs(**vars(namespace))
    except ValueError as error:
        parser.error(str(error))
