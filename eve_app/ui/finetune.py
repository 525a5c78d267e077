"""The fine-tune tab: validate a dataset, set up a staged job, launch it, watch it, abort it, load the result.

The tab never trains in the web server: it hands a `JobConfig` to the `JobRunner`, which starts the training CLI in
its own process group, and then only reads what the job writes (metrics.jsonl, its log) and what storage records.
Anyone may validate a dataset and preview the command (both bounded by the upload limits, and shown without server
paths); launching, aborting, watching a job's log and loading a model into the chat need the admin password.
"""

import dataclasses
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from huggingface_hub import constants as hub_constants

from model.shared import ADAPTER_CONFIG_FILE, PROJECT_ROOT

from ..context import AppContext
from ..errors import UserError
from ..jobs import (
    ConfigError,
    JobConfig,
    JobRunner,
    command_preview,
    paged_preview,
    stage_presets,
    validate_dataset,
    validate_upload,
)
from ..jobs.memory import base_config, hardware_capacity, job_plan
from ..jobs.results import results_key
from ..jobs.validation import ValidationResult
from ..security import client_address, resolve_checkpoint_choice, session_owner, viewer
from ..settings import DEFAULT_MODEL
from .finetune_layout import JOB_COLUMNS, KEEP_FLAGS_WHOLE_JS, PREVIEW_COLUMNS, finetune_layout
from .finetune_results import results_html
from .generation import model_line
from .history import parse_conversation_ids
from .job_form import FIELDS, FORM_FIELDS, LOADED_FIELDS, read_settings, shown_settings, takes_form
from .refusals import refuse

LOSS_COLUMNS = ["step", "value", "series", "stage"]
DEFAULT_CHOICE = "default model (eve-tiny)"
ABORT_GRACE = 60.0  # seconds a trainer gets to finish its step and save a checkpoint before it is killed
MERGED_FOLDER = "merged"  # a LoRA job's merged checkpoint, beside its `out` folder in the job's run folder
MERGE_TIMEOUT = 3600.0  # seconds a merge may take (loading a 7B base and writing it again)


def weights_size(folder: str | Path | None) -> str:
    """What a finished job wrote, for the jobs table: "adapter 1.2 MB" for a LoRA job, "16.0 MB" for a full model."""
    if not folder or not Path(folder).is_dir():
        return ""
    megabytes = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors")) / 1e6
    if (Path(folder) / ADAPTER_CONFIG_FILE).is_file():
        return f"adapter {megabytes:.2f} MB"
    return f"{megabytes:.1f} MB"


def launch_blocked_reason(ctx: AppContext) -> str | None:
    """Why this server may not launch jobs, or None when an admin password unlocks them."""
    settings = ctx.settings
    if settings.on_spaces and not settings.allow_jobs_on_spaces:
        return "Launching jobs is off on Hugging Face Spaces (set EVE_ALLOW_JOBS_ON_SPACES=1 to allow it)."
    if not settings.admin_password:
        return "Launching jobs needs an admin password: start the app with EVE_ADMIN_PASSWORD set."
    return None


def loss_frame(rows: list[dict]) -> pd.DataFrame:
    """Losses with numeric steps and values, also when empty: the plot then draws lines on number axes (an empty
    frame of object columns made it treat the values as categories)."""
    frame = pd.DataFrame(rows, columns=LOSS_COLUMNS)
    return frame.astype({"step": "int64", "value": "float64", "series": "string", "stage": "string"})


# The form fields the memory plan depends on; a "method" field joins them where the form has one.
PLAN_FIELDS = [
    "dataset",
    "base",
    "stages",
    "batch_size",
    "max_length",
    "max_image_size",
    "hardware",
    "strategy",
    "method",
    "lora_rank",
]


def gpu_memory() -> int | None:
    """Bytes of memory of this machine's first GPU (None without one); torch is loaded by then (the chat's engine)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def describe_stages(stages: list[str]) -> str:
    presets = stage_presets()
    lines = []
    for name in stages:
        preset = presets[name]
        groups = ", ".join(preset["train"])
        lines.append(f"**{preset['title']}** — trains: {groups}. {preset['purpose']}")
    return "\n\n".join(lines)


def redact_paths(text: str, names: dict[str, str]) -> str:
    """`text` with each path in `names` replaced by its name where it stands as a whole path or the start of one
    (`/srv/app` in `/srv/app/x` or `"/srv/app"`, not in `/srv/apples` or `/old/srv/app`); the longest first, so a
    path inside another (the interpreter inside the project) keeps its own name."""
    for path in sorted(names, key=len, reverse=True):
        if not path:
            continue
        whole = re.compile(r"(?<![\w./~-])" + re.escape(path.rstrip("/")) + r"(?![\w-]|\.\w)")
        text = whole.sub(names[path].replace("\\", "\\\\"), text)  # the name as written (no group references)
    return text


def training_rows_refusal(config: JobConfig, result: ValidationResult) -> str | None:
    """Why the validated rows cannot feed one optimizer step of this job (after the eval split and the dropped
    rows), or None. The trainer would fail the same way a minute later, after loading the model."""
    from model.train.args import TrainArgs
    from model.train.data import split_records

    valid = int((result.summary or {}).get("valid_samples", 0))
    eval_samples = TrainArgs.eval_samples  # the trainer's default cap on held-out rows
    try:
        train, held_out = split_records(list(range(valid)), config.eval_split, eval_samples, config.seed)
    except ValueError:
        train, held_out = [], list(range(valid))
    needed = config.batch_size * config.grad_accum * config.processes
    if len(train) >= needed:
        return None
    dropped = int((result.summary or {}).get("invalid_samples", 0))
    counts = f"{valid} of {valid + dropped} rows are valid"
    counts += f" ({dropped} with problems are left out)" if dropped else ""
    counts += f", {len(held_out)} held out for evaluation (eval split {config.eval_split:g})" if held_out else ""
    return (
        f"{counts}: {len(train)} training rows are fewer than one optimizer step needs "
        f"({config.processes} process{'es' if config.processes > 1 else ''} x batch {config.batch_size} x gradient "
        f"accumulation {config.grad_accum} = {needed}). Add rows, fix the rows with problems, or lower the batch "
        "size, the gradient accumulation or the eval split."
    )


def dropped_rows_note(result: ValidationResult) -> str:
    """What a launched job leaves out of the upload: the rows with problems, named (empty when none)."""
    bad = [row for row in result.rows if not row.valid]
    if not bad:
        return ""
    names = ", ".join(row.label for row in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return f"⚠️ The job trains on {len(result.rows) - len(bad)} of {len(result.rows)} rows; left out: {names}."


def _joined(value) -> str:
    return value if isinstance(value, str) else "; ".join(str(v) for v in value)


class FinetuneHandlers:
    """The fine-tune tab's event handlers, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.form: dict[str, gr.components.Component] = {}  # the job settings' components by name (set by build)

    # Who may do what

    @property
    def runner(self) -> JobRunner:
        """The job runner; the app always has one where jobs can be watched or launched."""
        if self.ctx.runner is None:
            raise refuse("This server runs no fine-tuning jobs.")
        return self.ctx.runner

    def _check_admin(self, password: str, request: gr.Request | None, unlocked: bool = False) -> None:
        """Refuses unless this page is unlocked or `password` is the admin's.

        `unlocked` (server-side page state) is set only by a right password on this page (Watch, Launch) or by a
        valid admin token the browser kept across a reload: such a page may launch, abort, compare and load models
        without typing the password again, and a click there never counts as a wrong guess.
        """
        reason = launch_blocked_reason(self.ctx)
        if reason:
            raise refuse(reason)
        if unlocked:
            return
        try:
            self.ctx.admin.check(password, client_address(request), trusted=bool(unlocked))
        except UserError as error:
            raise refuse(str(error)) from None

    def redact(self, text: str) -> str:
        """Server paths replaced by names a visitor may see: the data folder, the project, the interpreter."""
        return redact_paths(
            text,
            {
                str(self.ctx.settings.data_dir.resolve()): "$EVE_DATA_DIR",
                str(PROJECT_ROOT): ".",
                sys.executable: "python",
            },
        )

    def checkpoint_roots(self) -> list[Path]:
        """Folders a base checkpoint may come from: the default model, the loaded one, finished jobs, the Hub cache."""
        roots = [Path(DEFAULT_MODEL), self.ctx.settings.data_dir / "runs", Path(hub_constants.HF_HUB_CACHE)]
        if self.ctx.engine.checkpoint_dir:
            roots.append(Path(self.ctx.engine.checkpoint_dir))
        return roots

    def base_choices(self) -> dict[str, str]:
        """Base checkpoints by the name the form shows: the default model, the loaded one, finished jobs."""
        choices = {DEFAULT_CHOICE: DEFAULT_MODEL}
        loaded = self.ctx.engine.checkpoint_dir
        if loaded and str(Path(loaded).resolve()) != str(Path(DEFAULT_MODEL).resolve()):
            choices[f"loaded model ({self.ctx.engine.name})"] = str(loaded)
        for job in self.ctx.jobs.list_jobs("done"):
            path = (job.get("final_metrics") or {}).get("model_path")
            if path:
                name = f"job-{job['id']}-{'-'.join(job['args'].get('stages') or [job['args'].get('stage', '')])}"
                choices[name] = path
                merged = Path(job["run_dir"]) / MERGED_FOLDER
                if (merged / "config.json").is_file():
                    choices[f"{name}-merged"] = str(merged)
        return choices

    def _base(self, base: str) -> str:
        base = self.base_choices().get(base, base)
        try:
            return resolve_checkpoint_choice(base, self.checkpoint_roots())
        except UserError as error:
            raise refuse(str(error)) from None

    # Data

    def validate(
        self,
        files: list[str] | None,
        export_ids: str,
        base: str,
        password: str,
        owner: str | None,
        request: gr.Request,
        unlocked: bool = False,
    ):
        """Validates an upload (or your History conversations) and shows its summary and first page of rows."""
        base = self._base(base)
        if not files and not export_ids.strip():
            raise refuse("Upload a LLaVA JSON file with its images (a zip or the files), or give History ids.")
        limits = self.ctx.settings.upload_limits()
        uploads = self.ctx.uploads
        in_use = self.ctx.runner.upload_dirs_in_use() if self.ctx.runner else set()
        visitor = client_address(request)
        if not uploads.room_for(visitor, in_use):
            raise refuse(
                "Too many validated datasets of other visitors are waiting to be launched; try again once they expire "
                f"({self.ctx.settings.upload_retention_minutes:g} minutes after validation)."
            )
        folder = uploads.reserve(visitor)  # from now on the sweeper keeps it, however long validation takes
        try:
            if export_ids.strip():
                result = self._validate_history(export_ids, folder, password, owner, request, unlocked)
            else:
                result = validate_upload(
                    files or [], self.ctx.settings.data_dir, base=base, limits=limits, upload_dir=folder
                )
        except BaseException:
            uploads.discard(folder)
            raise
        key = uploads.add(result, visitor)  # beyond the visitor's share, their oldest uploads make room
        uploads.sweep(in_use)
        summary = html.escape(self.redact(result.message())).replace("\n", "  \n")
        return summary, self.preview(key, 1), key, 1

    def _validate_history(
        self,
        export_ids: str,
        folder: Path,
        password: str,
        owner: str | None,
        request: gr.Request,
        unlocked: bool = False,
    ) -> ValidationResult:
        """Your History conversations (everyone's for the admin) exported as training data into `folder`, checked."""
        ids = parse_conversation_ids(export_ids)
        try:
            is_admin = self.ctx.admin.is_admin(password, client_address(request), bool(unlocked))
            who = viewer(owner or session_owner(request), is_admin)
            self.ctx.conversations.export(who, ids, folder / "files", "llava")
        except UserError as error:
            raise refuse(str(error)) from None
        limits = self.ctx.settings.upload_limits()
        result = validate_dataset(folder / "files" / "data.json", folder / "files", limits=limits)
        result.upload_dir = folder
        return result

    def preview(self, key: str, page: float) -> pd.DataFrame:
        result = self.ctx.uploads.get(key)
        if result is None:
            return pd.DataFrame(columns=PREVIEW_COLUMNS)
        rows = paged_preview(result, page=int(page or 1), page_size=20)["rows"]
        return pd.DataFrame(
            [[r["row"], r["id"], _joined(r["images"]), r["turns"], _joined(r["problems"])] for r in rows],
            columns=PREVIEW_COLUMNS,
        )

    # Job settings

    def config_from(self, form: dict[str, Any]) -> JobConfig:
        """The job settings of the form (by field name), checked (refused with a message when they cannot run)."""
        result = self.ctx.uploads.get(form["dataset"])
        if result is None or result.data_path is None:
            raise refuse(
                "Validate a dataset first (validations are kept for a limited time): nothing runs on "
                "data that was not checked."
            )
        if not form["stages"]:
            raise refuse("Pick at least one stage.")
        settings = read_settings(form)
        if settings["method"] not in ("lora", "qlora"):
            settings["lora_rank"] = None
        stages = form["stages"]
        return JobConfig(
            **settings,
            base=self._base(form["base"]),
            data=str(result.data_path),
            image_folder=str(result.image_folder),
            stage=stages[0],
            stages=stages if len(stages) > 1 else None,
            eval_every=0,
            save_every=max(1, (settings["max_steps"] or 100) // 4),
            strategy=form["strategy"],
        )

    @takes_form()
    def preview_command(self, form: dict[str, Any]) -> str:
        """The exact command a launch with these settings would run, server paths shown as names.

        Args:
            dataset: the id that /validate_dataset returned.
            base: "default model (eve-tiny)", a finished job ("job-3-3"), a checkpoint folder or a Hub id.
            stages: one or more of "1", "2.1", "2.2", "3", run in that order.
            lr, max_steps, max_image_size, max_length: empty for the base's or the stage's own.
            method: "full", "lora" or "qlora"; lora_rank: empty for the base's default (8 otherwise).
        """
        output = self.ctx.settings.data_dir.resolve() / "runs" / "job-N" / "out"
        config = dataclasses.replace(self.config_from(form), output_dir=str(output))
        try:
            return self.redact(command_preview(config))
        except ConfigError as error:
            raise refuse(str(error)) from None

    def _plan_config(self, values: dict) -> JobConfig:
        """Job settings from the plan's form fields; no validated dataset is needed to see a plan."""
        names = ("max_length", "max_image_size", "hardware", "method", "lora_rank")
        try:
            read = {name: FIELDS[name].value(values.get(name, "")) for name in names}
        except UserError as error:
            raise refuse(str(error)) from None
        if not read["lora_rank"] or read["method"] == "full":
            del read["lora_rank"]
        stages = values.get("stages") or ["3"]
        return JobConfig.from_dict(
            {
                "base": self._base(str(values.get("base") or DEFAULT_CHOICE)),
                "data": "(not needed for the plan)",
                "stage": stages[0],
                "stages": stages if len(stages) > 1 else None,
                "batch_size": int(values.get("batch_size") or 1),
                **read,
                "strategy": str(values.get("strategy") or "ddp"),
            }
        )

    def _refusal(self, config: JobConfig, longest_row: int | None) -> tuple[str, str | None]:
        """(the plan as Markdown, why Launch refuses it or None); a base whose size is unknown gets no plan."""
        try:
            model_config = base_config(config)
            plan = job_plan(config, model_config, longest_row)
        except ValueError as error:
            return f"No memory plan: {self.redact(str(error))}.", None
        capacity, device = hardware_capacity(config, gpu_memory())
        verdict = "fits" if plan.fits(capacity) else "does not fit"
        text = plan.describe() + f"\n- the chosen hardware: {capacity / 2**30:.0f} GiB per {device}: {verdict}"
        if not config.gpus:  # what the same job would need on one GPU (bf16), for those who have one elsewhere
            gpu = job_plan(dataclasses.replace(config, hardware=1), model_config, longest_row)
            fits = ", ".join(f"{size} GB" for size in gpu.fitting_gpus()) or "none of 24, 48, 80 GB"
            text += f"\n- on one GPU (bf16): {gpu.total / 2**30:.1f} GiB, fits {fits}"
        return text, plan.refusal(capacity, model_config, device)

    def memory_plan(self, *values) -> str:
        """The estimated memory per device of a job with these settings, and whether the chosen hardware holds it."""
        settings = dict(zip(PLAN_FIELDS, values))
        result = self.ctx.uploads.get(str(settings.get("dataset") or ""))
        longest = (result.summary or {}).get("longest_row") if result is not None else None
        try:
            config = self._plan_config(settings)
        except gr.Error as error:  # a base or a number the form cannot use yet: said here, not as a pop-up per key
            return f"No memory plan: {error.message}"
        text, refusal = self._refusal(config, longest or None)
        return text + (f"\n\n⛔ Launch refuses this: {refusal}" if refusal else "")

    def save_config(self, *values) -> str:
        """job.json with the form's settings (the dataset is not part of it: validate it again to reuse)."""
        settings = dataclasses.asdict(self.config_from(dict(zip(FORM_FIELDS, values))))
        config = JobConfig.from_dict(
            {**settings, "data": "(validate a dataset)", "image_folder": None, "base": self.redact(settings["base"])}
        )
        path = Path(tempfile.mkdtemp(prefix="job-config-")) / "job.json"
        path.write_text(config.to_json())
        return str(path)

    def load_config(self, path: str | None) -> dict:
        """Fills the form from a saved job.json (unknown or broken settings are a message, not a crash)."""
        if not path:
            raise refuse("Upload a job.json saved from this tab.")
        try:
            config = JobConfig.from_json(Path(path).read_text(encoding="utf-8", errors="replace")[:100_000])
        except ConfigError as error:
            raise refuse(f"That job.json cannot be used: {error}") from None
        except OSError:  # a folder, or a file gone from the cache
            raise refuse("That job.json cannot be read: upload the file saved from this tab again.") from None

        return {self.form[name]: value for name, value in shown_settings(config).items()}

    # Jobs (admin)

    @takes_form()
    def launch_job(
        self,
        form: dict[str, Any],
        password: str = "",
        unlocked: bool = False,
        request: gr.Request | None = None,
    ):
        """Launches a fine-tuning job (needs the admin password); returns the jobs table and the new job's id.

        The settings are those of /preview_command; `password` is the admin password.
        """
        config = self._launchable(form, password, unlocked, request)
        try:
            job_id = self.runner.submit(config)
        except ConfigError as error:
            raise refuse(str(error)) from None
        self.ctx.uploads.claim(form["dataset"])
        return self.jobs_table(), job_id

    @takes_form()
    def check_launch(
        self,
        form: dict[str, Any],
        password: str = "",
        unlocked: bool = False,
        request: gr.Request | None = None,
    ) -> None:
        """Launch's refusals, before the launch itself: raised from an event with no outputs, a refusal is the toast
        alone (raised by `launch_job`, Gradio would also mark its outputs, the jobs table and the job field, with an
        "Error" badge, as if they had failed). A wrong password is counted once: `launch_job` then does not run."""
        self._launchable(form, password, unlocked, request)

    def _launchable(
        self, form: dict[str, Any], password: str, unlocked: bool, request: gr.Request | None
    ) -> JobConfig:
        """The job's settings, once the admin password and every check of what the job can run have passed."""
        self._check_admin(password, request, unlocked)
        config = self.config_from(form)
        result = self.ctx.uploads.get(form["dataset"])
        _, refusal = self._refusal(config, (result.summary or {}).get("longest_row") if result else None)
        if refusal:
            raise refuse(refusal)
        if result is not None:
            rows_refusal = training_rows_refusal(config, result)
            if rows_refusal:
                raise refuse(rows_refusal)
        return config

    def jobs_table(self) -> pd.DataFrame:
        """One row a job: id, status, creation time, stages, method and the size of what it wrote (adapters are
        megabytes where full models are gigabytes)."""
        runner = self.ctx.runner
        rows = [
            [
                j["id"],
                "stopping…" if runner and runner.stopping(j) else j["status"],
                str(j["created_at"])[:16].replace("T", " "),  # on a phone, date and time wrap apart
                " → ".join(j["args"].get("stages") or [j["args"].get("stage", "")]),
                j["args"].get("method", "full"),
                weights_size((j.get("final_metrics") or {}).get("model_path")) if j["status"] == "done" else "",
            ]
            for j in self.ctx.jobs.list_jobs()
        ]
        return pd.DataFrame(rows, columns=JOB_COLUMNS)

    def merge(self, password: str, job_id: float | None, request: gr.Request, unlocked: bool = False):
        """Folds a finished LoRA job's adapter into its base (admin): a full checkpoint in the job's `merged` folder,
        offered as a base and a chat model ("job-N-…-merged"). Runs `python -m model.train.merge` in its own process,
        so the server's memory is not spent on a second copy of the model. Returns the message and the two model
        pickers' new choices."""
        self._check_admin(password, request, unlocked)
        if not job_id:
            raise refuse("Pick a finished LoRA job first.")
        try:
            job = self.ctx.jobs.get_job(int(job_id))
        except LookupError:
            raise refuse(f"There is no job {int(job_id)}.") from None
        adapter = (job.get("final_metrics") or {}).get("model_path")
        if job["status"] != "done" or not adapter or not (Path(adapter) / ADAPTER_CONFIG_FILE).is_file():
            raise refuse(f"Job {int(job_id)} is not a finished lora or qlora job: there is no adapter to merge.")
        merged = Path(job["run_dir"]) / MERGED_FOLDER
        argv = [sys.executable, "-m", "model.train.merge", adapter, str(merged)]
        try:
            done = subprocess.run(  # our own module; the paths come from storage, not from the visitor
                argv, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=MERGE_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise refuse(f"Merging job {int(job_id)} took longer than {MERGE_TIMEOUT:g} s and was stopped.") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise refuse(f"Merging job {int(job_id)} failed: {self.redact(last)}")
        choices = list(self.base_choices())
        message = f"Merged job {int(job_id)}: **{weights_size(merged)}** full checkpoint, offered as a model."
        return message, gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    def _watch(self, job_id: float | None):
        if not job_id:
            return "No job selected.", "", None
        job_id = int(job_id)
        try:
            progress = self.runner.progress(job_id)
        except LookupError:
            return f"There is no job {job_id}.", "", None
        label = progress["label"]
        if progress["status"] == "queued":
            label += " — waiting for the running job to end (one job runs at a time)"
        elif progress["status"] == "running" and not progress.get("total"):
            label += " — starting: loading the model and the data"
        if progress.get("model_path"):  # a finished job: its final weights, not the last intermediate checkpoint
            label += f"\n\nFinal weights: `{self.redact(str(progress['model_path']))}`"
        elif progress.get("checkpoint"):
            label += f"\n\nLast checkpoint: `{self.redact(str(progress['checkpoint']))}`"
        if progress.get("error"):
            label += f"\n\n⚠️ {self.redact(progress['error'].splitlines()[0])}"
        rows = self.runner.loss_series(job_id)
        # No losses yet: no chart at all (an empty one makes Vega warn of an "Infinite extent" on every refresh).
        losses = loss_frame(rows) if rows else None
        return label, self.redact(self.runner.log_tail(job_id, 40)), losses

    def watch(self, job_id: float | None, password: str, request: gr.Request, unlocked: bool = False):
        """Progress line, log tail and loss plot of one job (admin); unlocks the timer that keeps them current, also
        after a reload of this page."""
        self._check_admin(password, request, unlocked)
        return *self._watch(job_id), True, self.ctx.admin.issue_token()

    def after_launch(self, job_id: float | None, dataset: str, password: str, unlocked: bool, request: gr.Request):
        """Right after a launch: the new job is watched at once (its progress, log and plot, kept current by the
        timer and re-attached after a reload) and the page says which rows the job leaves out."""
        self._check_admin(password, request, unlocked)  # launch just accepted it: the right password is no guess
        result = self.ctx.uploads.get(dataset)
        note = dropped_rows_note(result) if result is not None else ""
        return *self._watch(job_id), True, self.ctx.admin.issue_token(), note

    def tick(self, job_id: float | None, unlocked: bool):
        """The timer's refresh: the jobs table for every visitor (the statuses are public), the watched job's
        progress, log and plot for a page the admin unlocked."""
        if not unlocked:
            return gr.skip(), gr.skip(), gr.skip(), self.jobs_table()
        return *self._watch(job_id), self.jobs_table()

    def restore(self, watched: float | None, token: str | None):
        """On page load: the job this browser watched, and whether its admin token still unlocks the page."""
        return (watched or None), self.ctx.admin.token_valid(token)

    def results_tick(self, job_id: float | None, unlocked: bool, shown: str | None):
        """The results panel of the watched job, redrawn only when its results changed (admin-unlocked pages)."""
        if not unlocked or not job_id:
            return gr.skip(), gr.skip()
        try:
            job = self.ctx.jobs.get_job(int(job_id))
        except LookupError:
            return "", ""
        key = results_key(Path(job["run_dir"])) if job["run_dir"] else ""
        key = f"{job['status']}:{key}"
        if key == shown:
            return gr.skip(), gr.skip()
        if job["status"] != "done":
            return "", key
        return results_html(self.runner.results(int(job_id))), key

    def compare(self, password: str, job_id: float | None, request: gr.Request, unlocked: bool = False):
        """Answers the job's held-out rows again with the base and the tuned model (admin); the panel shows them."""
        self._check_admin(password, request, unlocked)
        if not job_id:
            raise refuse("Pick a finished job first.")
        try:
            started = self.runner.compare(int(job_id))
        except LookupError:
            raise refuse(f"There is no job {int(job_id)}.") from None
        except ValueError as error:
            raise refuse(str(error).capitalize() + ".") from None
        message = "Comparing base and tuned answers…" if started else "A comparison of this job is already running."
        return message, ""

    def abort(self, password: str, job_id: float | None, request: gr.Request, unlocked: bool = False):
        self._check_admin(password, request, unlocked)
        if not job_id:
            raise refuse("Pick a job first.")
        try:
            status = self.ctx.jobs.get_job(int(job_id))["status"]
            if status not in ("queued", "running"):  # said in a toast; the jobs table stays in view (no error state)
                gr.Warning(f"Job {int(job_id)} has already ended ({status}): there is nothing to abort.")
                return self.jobs_table()
            self.runner.abort(int(job_id), grace=ABORT_GRACE, wait=False)  # the monitor finishes it
        except LookupError:
            raise refuse(f"There is no job {int(job_id)}.") from None
        return self.jobs_table()

    def load_into_chat(self, password: str, choice: str, request: gr.Request, unlocked: bool = False):
        """Swaps the chat's model, for every visitor (admin): the default model, a finished job, or a folder inside
        the allowed roots. Returns the confirmation and the chat's new model line."""
        self._check_admin(password, request, unlocked)
        choices = self.base_choices()
        path = self._base(choice)
        name = choice if choice in choices and choice.startswith("job-") else Path(path).name
        if choice == DEFAULT_CHOICE:
            name = Path(DEFAULT_MODEL).name
        try:
            self.ctx.engine.reload(path, name=name)
        except UserError as error:  # a backend that cannot swap models (vLLM) says so
            raise refuse(str(error)) from None
        return f"Loaded **{name}** into the chat.", model_line(self.ctx.engine)

    def refresh_choices(self):
        """The model choices again (finished jobs appear once done)."""
        choices = list(self.base_choices())
        return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices)

    @staticmethod
    def pick_job(table: pd.DataFrame, event: gr.SelectData) -> int:
        return int(table.iloc[event.index[0], 0])


def build_finetune_tab(ctx: AppContext, owner: gr.State, chat: dict, browser: dict, unlocked: gr.State) -> dict:
    """Lays out the fine-tune tab and wires its events. `browser`: the values kept in the browser's storage
    ("watched_job", "admin_token"), created at the top of the page so that they load with it; `unlocked`: whether
    this page holds a valid admin token (shared with the History tab)."""
    h = FinetuneHandlers(ctx)
    c = finetune_layout(ctx, launch_blocked_reason(ctx), describe_stages, h.jobs_table(), h.base_choices())
    h.form = {name: c[name] for name in FORM_FIELDS}
    form = list(h.form.values())
    c["unlocked"] = unlocked
    c["watched"], c["admin_token"] = browser["watched_job"], browser["admin_token"]
    c["validate"].click(
        h.validate,
        [c["files"], c["export_ids"], c["base"], c["password"], owner, unlocked],
        [c["summary"], c["preview"], c["dataset"], c["page"]],
        api_name="validate_dataset",
        concurrency_id="validate",
        concurrency_limit=ctx.settings.max_concurrent_validations,
    )
    c["page"].change(h.preview, [c["dataset"], c["page"]], c["preview"], api_visibility="private")
    c["stages"].change(describe_stages, c["stages"], c["stage_info"], api_visibility="private")
    previewed = c["preview_command"].click(h.preview_command, form, c["command"], api_name="preview_command")
    previewed.success(None, None, None, js=KEEP_FLAGS_WHOLE_JS, api_visibility="private")  # "--flag" on one line
    c["save_config"].click(h.save_config, form, c["config_file"], api_visibility="private")
    c["load_config"].upload(
        h.load_config, c["load_config"], [c[name] for name in LOADED_FIELDS], api_visibility="private"
    )
    checked = c["launch"].click(h.check_launch, [*form, c["password"], unlocked], None, api_visibility="private")
    launched = checked.success(
        h.launch_job, [*form, c["password"], unlocked], [c["jobs"], c["job_id"]], api_name="launch_job"
    )
    c["abort"].click(h.abort, [c["password"], c["job_id"], unlocked], c["jobs"], api_name="abort_job")
    c["refresh"].click(h.jobs_table, None, c["jobs"], api_visibility="private")
    c["jobs"].select(h.pick_job, c["jobs"], c["job_id"], api_visibility="private")
    watched = [c["progress"], c["log"], c["loss_plot"]]
    c["timer"].tick(
        h.tick, [c["job_id"], c["unlocked"]], [*watched, c["jobs"]], api_visibility="private", show_progress="hidden"
    )
    c["results_key"] = gr.State("")
    c["timer"].tick(
        h.results_tick,
        [c["job_id"], c["unlocked"], c["results_key"]],
        [c["results"], c["results_key"]],
        api_visibility="private",
        show_progress="hidden",
    )
    c["compare"].click(
        h.compare,
        [c["password"], c["job_id"], unlocked],
        [c["compare_status"], c["results_key"]],
        api_name="compare_job",
    )
    plan_inputs = [c[name] for name in PLAN_FIELDS]
    for component in plan_inputs:
        component.change(
            h.memory_plan, plan_inputs, c["memory_plan"], api_visibility="private", show_progress="hidden"
        )
    c["plan"] = (h.memory_plan, plan_inputs, c["memory_plan"])
    c["watch"].click(
        h.watch, [c["job_id"], c["password"], unlocked], [*watched, unlocked, c["admin_token"]], api_name="watch_job"
    )
    launched.success(
        h.after_launch,
        [c["job_id"], c["dataset"], c["password"], c["unlocked"]],
        [*watched, c["unlocked"], c["admin_token"], c["launch_status"]],
        api_visibility="private",
    )
    # The watched job is kept in the browser, so a reloaded page re-attaches to it.
    c["job_id"].change(lambda job_id: job_id, c["job_id"], c["watched"], api_visibility="private")
    c["restore"] = (h.restore, [c["watched"], c["admin_token"]], [c["job_id"], c["unlocked"]])
    c["load_into_chat"].click(
        h.load_into_chat,
        [c["password"], c["chat_model"], unlocked],
        [c["load_status"], chat["model"]],
        api_name="load_model",
    )
    c["refresh"].click(h.refresh_choices, None, [c["base"], c["chat_model"]], api_visibility="private")
    c["merge"].click(
        h.merge,
        [c["password"], c["job_id"], unlocked],
        [c["load_status"], c["base"], c["chat_model"]],
        api_name="merge_adapter",
        concurrency_id="merge",
        concurrency_limit=1,
    )
    c["jobs_table"] = h.jobs_table
    return c
