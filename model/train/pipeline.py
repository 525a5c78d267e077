"""Several stages in a row: each stage is one `model.train` run into `OUTPUT/stage-NAME/`, based on the previous one.

    python -m model.train.pipeline --stages warmup,1,2.1,3 --output-dir out \\
        --from-scratch small.json --tokenizer tok \\
        --stage-args "3=--lr 1e-3 --max-steps 2000" \\
        --synthetic ocr,scene --max-steps 500 --batch-size 32 --lr 3e-3
    # every flag the pipeline does not know is passed to every stage; --stage-args adds flags to one stage

A stage may carry a label, PRESET:LABEL (e.g. `3:read,3:mix`), to run one preset several times with different flags;
it writes OUTPUT/stage-PRESET-LABEL/ and takes its --stage-args under the full name ("3:read=--synthetic ocr").

Rerunning the same command resumes: a stage whose final model is saved is skipped, and an interrupted stage continues
from its last checkpoint (`--resume auto`). SIGTERM/SIGINT are passed to the running stage, which saves a checkpoint;
the pipeline then stops. `--launcher "accelerate launch --config_file configs/accelerate/cpu_ddp.yaml"` runs each
stage under accelerate.
"""

import argparse
import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..shared import PROJECT_ROOT
from .checkpoints import is_finished
from .stages import get_stage

logger = logging.getLogger(__name__)


@dataclass
class StageRun:
    stage: str  # as named in the pipeline: a preset, or PRESET:LABEL
    output_dir: Path
    argv: list[str]  # arguments of `python -m model.train`


def split_stage_name(name: str) -> tuple[str, str]:
    """The preset and the folder of a pipeline stage: "3:read" -> ("3", "stage-3-read"), "2.1" -> ("2.1", "stage-2.1")."""
    preset, _, label = name.partition(":")
    return preset, f"stage-{preset}-{label}" if label else f"stage-{preset}"


def plan(
    stages: Sequence[str],
    output_dir: str | Path,
    source: list[str],
    common: list[str],
    stage_args: dict[str, list[str]] | None = None,
) -> list[StageRun]:
    """The runs of a pipeline: the first stage starts from `source` (--base or --from-scratch flags), each later
    stage from the previous stage's output folder."""
    runs, previous = [], None
    for name in stages:
        preset, folder = split_stage_name(name)
        get_stage(preset)  # unknown names fail before anything runs
        out = Path(output_dir) / folder
        start = ["--base", str(previous)] if previous else source
        argv = [*start, "--stage", preset, "--output-dir", str(out), *common, *(stage_args or {}).get(name, [])]
        runs.append(StageRun(name, out, argv))
        previous = out
    return runs


class ForwardSignals:
    """While a stage runs, SIGTERM/SIGINT go to it (it checkpoints and exits 0) and the pipeline stops after it."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.stopped = False

    def _handle(self, signum, frame) -> None:
        self.stopped = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self, command: list[str], env: dict, cwd: Path | None = None) -> int:
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.child = subprocess.Popen(command, env=env, cwd=cwd)
            return self.child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_pipeline(runs: list[StageRun], launcher: Sequence[str] = (sys.executable,)) -> int:
    """Runs the stages in order; returns the first non-zero exit status, else 0 (also when stopped by a signal)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    signals = ForwardSignals()
    for run in runs:
        if is_finished(run.output_dir):
            logger.info("Stage %s: already finished in %s, skipped", run.stage, run.output_dir)
            continue
        command = [*launcher, "-m", "model.train", *run.argv]
        logger.info("Stage %s: %s", run.stage, shlex.join(command))
        status = signals.run(command, env)
        if status != 0:
            logger.error("Stage %s failed with exit status %d", run.stage, status)
            return status
        if signals.stopped or not is_finished(run.output_dir):
            logger.info("Pipeline stopped during stage %s; rerun the same command to resume", run.stage)
            return 0
    logger.info("Pipeline finished: %s", runs[-1].output_dir if runs else "no stages")
    return 0


def _stage_args(values: list[str]) -> dict[str, list[str]]:
    """`--stage-args "3=--lr 2e-5 --data sft.json"` (repeatable) -> {"3": ["--lr", "2e-5", "--data", "sft.json"]}."""
    parsed: dict[str, list[str]] = {}
    for value in values:
        stage, sep, flags = value.partition("=")
        if not sep:
            raise ValueError(f"--stage-args takes STAGE=FLAGS, got {value!r}")
        parsed.setdefault(stage.strip(), []).extend(shlex.split(flags))
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.train.pipeline",
        allow_abbrev=False,  # every unknown flag goes to the stages, so no prefix may be taken for a pipeline flag
        description="Run training stages in sequence; unknown flags are passed to every stage (see model.train).",
    )
    parser.add_argument(
        "--stages", required=True, help="comma-separated stages, e.g. warmup,1,2.1,2.2,3 (or PRESET:LABEL)"
    )
    parser.add_argument("--output-dir", required=True, help="each stage writes OUTPUT_DIR/stage-NAME")
    parser.add_argument("--base", help="checkpoint the first stage starts from")
    parser.add_argument("--from-scratch", metavar="CONFIG.json", help="config of a new model for the first stage")
    parser.add_argument("--tokenizer", help="tokenizer folder for --from-scratch")
    parser.add_argument(
        "--stage-args",
        action="append",
        default=[],
        metavar="STAGE=FLAGS",
        help="extra flags for one stage (repeatable)",
    )
    parser.add_argument(
        "--launcher",
        default=shlex.quote(sys.executable),
        help='command that runs "-m model.train ...", e.g. "accelerate launch --config_file X"',
    )
    args, common = parser.parse_known_args(argv)
    if bool(args.base) == bool(args.from_scratch):
        parser.error("give exactly one of --base or --from-scratch")
    source = (
        ["--base", args.base] if args.base else ["--from-scratch", args.from_scratch, "--tokenizer", args.tokenizer]
    )
    try:
        runs = plan(args.stages.split(","), args.output_dir, source, common, _stage_args(args.stage_args))
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    return run_pipeline(runs, shlex.split(args.launcher))


if __name__ == "__main__":
    sys.exit(main())
