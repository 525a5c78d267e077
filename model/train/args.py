"""Command-line arguments of `python -m model.train`, parsed into one typed `TrainArgs` (the loop never sees argparse).

Each flag is declared once, as a field of `TrainArgs`: its default, and in its metadata the help text and argparse
options, which `transformers.HfArgumentParser` reads (as LLaMA-Factory's `hparams` do). Defaults follow the official
recipe (AdamW without weight decay, cosine schedule with 3% warm-up, gradient clipping at 1.0, one epoch); the
learning rate defaults to the stage preset's.
"""

import argparse
import copy
import dataclasses
import json
import logging
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from transformers import HfArgumentParser
from transformers.hf_argparser import DataClassType, HfArg

from ..shared import RESIZE_MODES, TRAIN_DEFAULTS, TRAIN_METHODS, finetune_defaults, stage_presets
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

# The sections of `--help`, in order.
MODEL, DATA = "model", "data"
METHOD = "method (the stage says which groups learn, the method how)"
OPTIM, RUN = "optimisation", "evaluation, checkpoints, logging"
GROUPS = (MODEL, DATA, METHOD, OPTIM, RUN)


def arg(
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    *,
    group: str,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    **options: Any,
) -> Any:
    """A `TrainArgs` field and its flag: `help` and argparse `options` (`metavar`, `choices`) in the metadata, where
    `HfArgumentParser` reads them; `group` names its `--help` section."""
    metadata = {"group": group, **options}
    return HfArg(default=default, default_factory=default_factory, help=help, metadata=metadata)


def share(default: float, help: str) -> Any:
    """A synthetic-data option that is a share (0 to 1)."""
    return arg(default, help, group=DATA, metavar="SHARE")


def ramp(first_last: list[Any], help: str) -> Any:
    """A synthetic-data option given as one value or FIRST,LAST, ramped linearly over (part of) the run."""
    return arg(default_factory=lambda: list(first_last), help=help, group=DATA, metavar="FIRST[,LAST]")


def ramp_pair(values: Sequence[Any], convert: Callable[[Any], Any], most: float, what: str) -> list[Any]:
    """A `ramp` option's values as [first, last] (one value stands for both), each between 0 and `most`.

    Raises:
        ValueError: `what` the option takes, and the range, when the values are not that.
    """
    pair = [convert(value) for value in values]
    pair = pair * 2 if len(pair) == 1 else pair
    if len(pair) != 2 or not all(0 <= value <= most for value in pair):
        raise ValueError(f"{what}, each between 0 and {most:g}")
    return pair


@dataclass
class TrainArgs:
    """Everything one training run needs; `run_args.json` in the output folder is this, as JSON."""

    output_dir: str = arg(group=RUN)
    stage: str = arg(
        TRAIN_DEFAULTS["stage"], "stage preset (default %(default)s)", group=MODEL, choices=tuple(stage_presets())
    )
    base: str | None = arg(None, "checkpoint folder or Hub id to start from", group=MODEL)
    from_scratch: str | None = arg(None, "build a new model from EveConfig fields", group=MODEL, metavar="CONFIG.json")
    tokenizer: str | None = arg(None, "tokenizer folder for --from-scratch", group=MODEL)
    data: list[str] = arg(
        default_factory=list, help="LLaVA JSON file(s), comma-separated or repeated", group=DATA, action="extend"
    )
    image_folder: str | None = arg(None, "folder image paths are relative to (default: the JSON's folder)", group=DATA)
    synthetic: list[str] = arg(
        default_factory=list, help="stream synthetic tasks instead of files: ocr,poster,...", group=DATA
    )
    synthetic_level: list[int] = arg(
        default_factory=lambda: [0], help="curriculum level, or comma-separated levels to mix", group=DATA
    )
    curriculum: bool = arg(
        False,
        "open the --synthetic-level values one after another over the run (easy first, then the full mix)",
        group=DATA,
    )
    made_up_words: float = share(
        0.0,
        "share of synthetic training words replaced by random strings of letters and digits, so that words are read "
        "letter by letter rather than memorised (evaluation keeps real held-out words)",
    )
    spell_answers: bool | None = arg(
        None,
        "tokenise answers one character per token instead of BPE pieces, so each output token lines up with one "
        "glyph (helps a small model learn to read; the decoded text is the same). Default: the base's fine-tuning "
        "default (the shipped model spells), else no",
        group=DATA,
    )
    image_resize: str | None = arg(
        None,
        "inference: every image rescaled to the model's area, as the chat sees it (default for --data); train: the "
        "official training rule, which only shrinks large images (default for --synthetic)",
        group=DATA,
        choices=RESIZE_MODES,
    )
    placement_spread: list[float] = ramp(
        [1.0, 1.0],
        "share of the free room synthetic grid text is placed in: 0 always puts it at the first free patch, 1 "
        "anywhere (default); FIRST,LAST ramps linearly over the run. A small model learns glyphs with text at one "
        "place, then to find it with a ramp (`python -m model.evaluation --spread` measures it at any spread)",
    )
    fixed_place_share: float = share(
        0.0,
        "share of synthetic samples whose grid text sits at the first free patch (spread 0), the rest at "
        "--placement-spread: glyphs at one place are learnt in a few hundred steps and anchor reading anywhere",
    )
    ocr_jitter: list[int] = ramp(
        [0, 0],
        "move synthetic OCR text off the patch grid by up to this many pixels each way (0: on it), FIRST to LAST over "
        "the first --ocr-jitter-ramp of the run; samples at the fixed place stay on the grid, the reading's anchor",
    )
    ocr_jitter_ramp: float = share(
        1.0, "the share of the run --ocr-jitter and --ocr-visitor-spread ramp over (default 1: the whole run)"
    )
    ocr_visitor_share: float = share(
        0.0,
        "share of synthetic OCR samples drawn visitor style: one of six training fonts, 16-48 px, at any pixel, dark "
        "on light or light on dark (evaluation uses two held-out fonts)",
    )
    ocr_visitor_fonts: str = arg(
        "train",
        "the fonts of --ocr-visitor-share: 'train' the six DejaVu faces, 'wide-train' 70 faces of 30 free families "
        "(`make fonts`; evaluation holds out Liberation and Carlito)",
        group=DATA,
        choices=("train", "wide-train"),
    )
    ocr_visitor_spread: list[float] = ramp(
        [1.0, 1.0],
        "room and size range of --ocr-visitor-share's text, FIRST to LAST over the first --ocr-jitter-ramp of the run: "
        "0 the anchor (32 px at the top-left corner: only the font and words vary), 1 any pixel at 16-48 px",
    )
    ocr_visitor_size_spread: list[float] = ramp(
        [],
        "size range alone of --ocr-visitor-share's text, ramped like --ocr-visitor-spread, which then narrows only the "
        "room: 0 32 px, 1 16-48 px; to open the place before the size (default: follow --ocr-visitor-spread)",
    )
    ocr_visitor_anchor_share: float = share(
        0.0,
        "share of --ocr-visitor-share's samples kept at the anchor (32 px at the top-left corner) whatever the ramps "
        "say, as --fixed-place-share keeps grid text at one place",
    )
    ocr_visitor_small_share: float = share(
        0.0,
        "share of the other --ocr-visitor-share samples drawn at the smallest quarter of the open size range "
        "(16-24 px at full --ocr-visitor-size-spread): small type is what a small model reads worst",
    )
    ocr_visitor_canvas_share: float = share(
        0.0,
        "share of the other --ocr-visitor-share samples drawn on a canvas of another shape (landscape 4:1 to square, "
        "the same area) instead of the OCR task's 4:1 strip: a visitor's image has any shape",
    )
    layout_mix: float = share(
        0.0,
        "share of synthetic poster, webpage and scene samples drawn in one of the generator's training layouts "
        "(title right-aligned near the bottom, the date first, headline above the links, shapes of varied size "
        "shifted in their cells...) instead of the level's own; evaluation's held-out layouts are never drawn",
    )
    texture_share: float = share(
        0.0,
        "share of synthetic samples drawn over a faint background texture (noise, paper grain, a soft gradient or "
        "ruled lines) instead of a plain colour",
    )
    max_image_size: int | None = arg(None, "image side (as area side**2); default: the stage's rule", group=DATA)
    max_length: int | None = arg(
        4096,
        "longest row in tokens, image tokens included (default %(default)s); the official recipe: 2048 or 4096 text "
        "tokens and the images",
        group=DATA,
    )
    num_workers: int = arg(0, "data-loader worker processes", group=DATA)
    method: str = arg(
        "full",
        "full: every weight of the stage's groups; lora: low-rank adapters (peft) on their linear layers; qlora: the "
        "same on a 4-bit nf4 base (bitsandbytes). Default %(default)s",
        group=METHOD,
        choices=TRAIN_METHODS,
    )
    lora_rank: int | None = arg(None, "adapter rank r (default: the base's, else 8)", group=METHOD)
    lora_alpha: int | None = arg(None, "adapter scale alpha (default: the base's, else 16)", group=METHOD)
    lora_dropout: float | None = arg(
        None, "dropout on the adapters' input (default: the base's, else 0)", group=METHOD
    )
    lora_targets: list[str] = arg(
        default_factory=lambda: list(LORA_TARGET_GROUPS),
        help=f"layer groups that get adapters, among {','.join(LORA_TARGET_GROUPS)} (default: both)",
        group=METHOD,
    )
    lora_patch_embedding: bool | None = arg(
        None,
        "also train the patch embedding in full where the stage trains it (peft modules_to_save); off by default: "
        "vLLM refuses adapters that carry it",
        group=METHOD,
    )
    lr: float | None = arg(
        None, "learning rate (default: the base's fine-tuning default, else the stage preset's)", group=OPTIM
    )
    patch_embedding_lr: float | None = arg(
        None,
        "learning rate of the patch embedding layer (default: --lr; cf. LLaVA's mm_projector_lr); a lower rate keeps "
        "a model trained from scratch from blowing its image embeddings up until colours and glyphs look alike to "
        "the decoder",
        group=OPTIM,
    )
    epochs: float = arg(TRAIN_DEFAULTS["epochs"], group=OPTIM)
    max_steps: int | None = arg(
        None, "optimizer steps (overrides --epochs; required for synthetic streams)", group=OPTIM
    )
    batch_size: int = arg(TRAIN_DEFAULTS["batch_size"], "samples per process per micro-step", group=OPTIM)
    grad_accum: int = arg(TRAIN_DEFAULTS["grad_accum"], "micro-steps per optimizer step", group=OPTIM)
    seed: int = arg(TRAIN_DEFAULTS["seed"], group=OPTIM)
    warmup_ratio: float = arg(0.03, group=OPTIM)
    weight_decay: float = arg(0.0, group=OPTIM)
    adam_beta2: float = arg(
        0.999,
        "AdamW's second-moment decay (0.95 steadies a small model trained from scratch at a high learning rate)",
        group=OPTIM,
    )
    max_grad_norm: float = arg(1.0, group=OPTIM)
    bf16: bool = arg(False, "bf16 mixed precision", group=OPTIM)
    gradient_checkpointing: bool = arg(False, group=OPTIM)
    cpu: bool = arg(False, "train on the CPU even if a GPU is present", group=OPTIM)
    eval_split: float = arg(TRAIN_DEFAULTS["eval_split"], "fraction of --data held out for eval loss", group=RUN)
    eval_every: int = arg(TRAIN_DEFAULTS["eval_every"], "steps between evaluations (0: at the end only)", group=RUN)
    eval_samples: int = arg(64, "most evaluation samples (synthetic: held-out samples)", group=RUN)
    save_every: int = arg(TRAIN_DEFAULTS["save_every"], "steps between checkpoints (0: none)", group=RUN)
    keep_checkpoints: int = arg(2, group=RUN)
    log_every: int = arg(10, "steps between metrics.jsonl lines", group=RUN)
    resume: str = arg("auto", "auto (last checkpoint in --output-dir), none, or a folder", group=RUN)
    stop_at_step: int | None = arg(None, "stop after this step with a checkpoint (resume later)", group=RUN)
    end_at_step: int | None = arg(
        None,
        "finish the stage after this step (final model saved, stage done) while the learning-rate schedule spans "
        "--max-steps: a run cut short on purpose, reproducibly",
        group=RUN,
    )

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
        self.placement_spread = ramp_pair(
            self.placement_spread, float, 1.0, "--placement-spread takes one share, or a first and a last share"
        )
        if not 0.0 <= self.fixed_place_share <= 1.0:
            raise ValueError("--fixed-place-share is a share between 0 and 1")
        if (self.placement_spread != [1.0, 1.0] or self.fixed_place_share) and not self.synthetic:
            raise ValueError("--placement-spread places synthetic text: it needs --synthetic")
        self.ocr_jitter = ramp_pair(
            self.ocr_jitter, int, 16, "--ocr-jitter takes one pixel count, or a first and a last"
        )
        self.ocr_visitor_spread = ramp_pair(
            self.ocr_visitor_spread, float, 1.0, "--ocr-visitor-spread takes one share, or a first and a last share"
        )
        if self.ocr_visitor_size_spread:
            self.ocr_visitor_size_spread = ramp_pair(
                self.ocr_visitor_size_spread,
                float,
                1.0,
                "--ocr-visitor-size-spread takes one share, or a first and a last share",
            )
        for flag, value in (
            ("--ocr-visitor-anchor-share", self.ocr_visitor_anchor_share),
            ("--ocr-visitor-small-share", self.ocr_visitor_small_share),
            ("--ocr-visitor-canvas-share", self.ocr_visitor_canvas_share),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{flag} is a share between 0 and 1")
        if not 0.0 < self.ocr_jitter_ramp <= 1.0:
            raise ValueError("--ocr-jitter-ramp is a share of the run: give a value above 0 and at most 1")
        if not 0.0 <= self.ocr_visitor_share <= 1.0:
            raise ValueError("--ocr-visitor-share is a share between 0 and 1")
        if (self.ocr_jitter != [0, 0] or self.ocr_visitor_share) and not self.synthetic:
            raise ValueError("--ocr-jitter and --ocr-visitor-share draw synthetic OCR text: they need --synthetic")
        for flag, value in (("--layout-mix", self.layout_mix), ("--texture-share", self.texture_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{flag} is a share between 0 and 1")
            if value and not self.synthetic:
                raise ValueError(f"{flag} draws synthetic images: it needs --synthetic")
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
    """`TrainArgs`' default of each field (a fresh list for list fields)."""
    defaults: dict[str, Any] = {}
    for spec in dataclasses.fields(TrainArgs):
        if spec.default is not dataclasses.MISSING:
            defaults[spec.name] = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            defaults[spec.name] = spec.default_factory()
    return defaults


def _comma_list(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """An argparse `type` reading "a,b" as a list of `item`s (named for argparse's "invalid ... value" message)."""

    def parse(text: str) -> list[Any]:
        return [item(part.strip()) for part in text.split(",") if part.strip()]

    parse.__name__ = f"comma-separated {item.__name__}"
    return parse


class TrainArgumentParser(HfArgumentParser):
    """`HfArgumentParser` over `TrainArgs`, with the command line this project has always had: list flags take
    comma-separated values (`--synthetic ocr,scene`, where HfArgumentParser reads space-separated ones), options
    whose empty value means "the base's default" are `--x/--no-x`, and each field's `group` metadata names its
    `--help` section."""

    def __init__(self, **kwargs: Any):
        self._groups: dict[str, Any] = {}
        super().__init__(DataClassType(TrainArgs), formatter_class=argparse.HelpFormatter, **kwargs)

    def _parse_dataclass_field(self, parser: Any, field: dataclasses.Field) -> None:  # type: ignore[override]
        if not self._groups:
            self._groups = {name: self.add_argument_group(name) for name in GROUPS}
        options = dict(field.metadata)
        parser = self._groups[options.pop("group")]
        names = sorted({f"--{field.name.replace('_', '-')}", f"--{field.name}"}, key=lambda name: "_" in name)
        if field.type == bool | None:  # None: the base's default; --x and --no-x override it either way
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=field.default, **options)
            return
        plain = copy.copy(field)
        plain.metadata = types.MappingProxyType(options)
        HfArgumentParser._parse_dataclass_field(parser, plain)
        action = self._actions[-1]  # the one just added (groups share their parser's list)
        action.option_strings = sorted(action.option_strings, key=lambda name: "_" in name)  # dashed first in --help
        if get_origin(field.type) is list:
            action.type, action.nargs = _comma_list(get_args(field.type)[0]), None


def build_parser() -> TrainArgumentParser:
    return TrainArgumentParser(
        prog="python -m model.train",
        description="Train one EVEv2 stage (a pipeline is a sequence of runs: see python -m model.train.pipeline).",
    )


def parse_args(argv: Sequence[str] | None = None) -> TrainArgs:
    """Command line -> TrainArgs; invalid combinations exit with the parser's usage message."""
    parser = build_parser()
    try:
        (args,) = parser.parse_args_into_dataclasses(argv, look_for_args_file=False)
    except ValueError as error:  # TrainArgs' checks, or flags the parser does not know
        parser.error(str(error))
    return args
