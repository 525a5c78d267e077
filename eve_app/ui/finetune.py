"""The fine-tune tab: validate a dataset, set up a staged job, launch it, watch it, abort it, load the result.

The tab never trains in the web server: it hands a `JobConfig` to the `JobRunner`, which starts the training CLI in
its own process group, and then only reads what the job writes (metrics.jsonl, its log) and what storage records.
"""

import json
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from ..context import AppContext
from ..jobs import (
    ConfigError,
    JobConfig,
    command_preview,
    paged_preview,
    stage_presets,
    validate_dataset,
    validate_upload,
)
from .finetune_layout import finetune_layout
from .history import parse_conversation_ids

PREVIEW_COLUMNS = ["row", "id", "images", "turns", "problems"]


def launch_blocked_reason(ctx: AppContext) -> str | None:
    """Why this server may not launch jobs, or None when an admin password unlocks them."""
    settings = ctx.settings
    if settings.on_spaces and not settings.allow_jobs_on_spaces:
        return "Launching jobs is off on Hugging Face Spaces (set EVE_ALLOW_JOBS_ON_SPACES=1 to allow it)."
    if not settings.admin_password:
        return "Launching jobs needs an admin password: start the app with EVE_ADMIN_PASSWORD set."
    return None


def describe_stages(stages: list[str]) -> str:
    presets = stage_presets()
    lines = []
    for name in stages:
        preset = presets[name]
        groups = ", ".join(preset["train"])
        lines.append(f"**{preset['title']}** — trains: {groups}. {preset['purpose']}")
    return "\n\n".join(lines)


def _joined(value) -> str:
    return value if isinstance(value, str) else "; ".join(str(v) for v in value)


class FinetuneHandlers:
    """The fine-tune tab's event handlers, bound to the app context."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx
        self.results: dict[str, object] = {}  # validation results by data path, for paging

    def validate(self, files: list[str] | None, export_ids: str, base: str):
        """Validates an upload (or a History export) and shows its summary and first page of rows."""
        if export_ids.strip():
            ids = parse_conversation_ids(export_ids)
            folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.ctx.settings.data_dir))
            self.ctx.storage.export_llava(ids, folder)
            result = validate_dataset(folder / "data.json", folder)
        elif files:
            result = validate_upload(files, self.ctx.settings.data_dir, base=base or None)
        else:
            raise gr.Error("Upload a LLaVA JSON file with its images (a zip or the files), or give History ids.")
        key = str(result.data_path or "")
        self.results[key] = result
        return result.message(), self.preview(key, 1), key, 1

    def preview(self, key: str, page: float) -> pd.DataFrame:
        result = self.results.get(key)
        if result is None:
            return pd.DataFrame(columns=PREVIEW_COLUMNS)
        rows = paged_preview(result, page=int(page or 1), page_size=20)["rows"]
        return pd.DataFrame([[r["row"], r["id"], _joined(r["images"]), r["turns"], _joined(r["problems"])]
                             for r in rows], columns=PREVIEW_COLUMNS)

    def config_from_form(
        self,
        key: str,
        base: str,
        stages: list[str],
        lr,
        max_steps,
        epochs,
        batch_size,
        grad_accum,
        max_image_size,
        max_length,
        seed,
        eval_split,
        hardware: str,
        strategy: str,
    ) -> JobConfig:
        result = self.results.get(key)
        if result is None or result.data_path is None:
            raise gr.Error("Validate a dataset first: nothing runs on data that was not checked.")
        if not stages:
            raise gr.Error("Pick at least one stage.")
        return JobConfig(
            base=base,
            data=str(result.data_path),
            image_folder=str(result.image_folder),
            stage=stages[0],
            stages=stages if len(stages) > 1 else None,
            lr=lr or None,
            max_steps=int(max_steps) if max_steps else None,
            epochs=float(epochs or 1),
            batch_size=int(batch_size),
            grad_accum=int(grad_accum),
            max_image_size=int(max_image_size) if max_image_size else None,
            max_length=int(max_length) if max_length else None,
            seed=int(seed),
            eval_split=float(eval_split),
            eval_every=0,
            save_every=max(1, int(max_steps or 100) // 4),
            hardware="cpu" if hardware == "CPU" else int(hardware.split()[0]),
            strategy=strategy,
        )

    def preview_command(self, *form) -> str:
        try:
            return command_preview(self.config_from_form(*form))
        except ConfigError as error:
            raise gr.Error(str(error)) from error

    def save_config(self, *form) -> str:
        path = Path(tempfile.mkdtemp(prefix="job-config-")) / "job.json"
        path.write_text(self.config_from_form(*form).to_json())
        return str(path)

    def launch(self, password: str, *form):
        reason = launch_blocked_reason(self.ctx)
        if reason:
            raise gr.Error(reason)
        if password != self.ctx.settings.admin_password:
            raise gr.Error("Wrong admin password.")
        try:
            job_id = self.ctx.runner.submit(self.config_from_form(*form))
        except ConfigError as error:
            raise gr.Error(str(error)) from error
        return self.jobs_table(), job_id

    def jobs_table(self) -> pd.DataFrame:
        rows = [
            [
                j["id"],
                j["status"],
                str(j["created_at"])[:16],
                " → ".join(j["args"].get("stages") or [j["args"].get("stage", "")]),
            ]
            for j in self.ctx.storage.list_jobs()
        ]
        return pd.DataFrame(rows, columns=["job", "status", "created", "stages"])

    def watch(self, job_id: float | None):
        """Progress line, log tail and loss plot of one job (polled by a timer)."""
        if not job_id:
            return "No job selected.", "", pd.DataFrame(columns=["step", "value", "series"])
        job_id = int(job_id)
        try:
            progress = self.ctx.runner.progress(job_id)
        except LookupError:
            return f"There is no job {job_id}.", "", pd.DataFrame(columns=["step", "value", "series"])
        label = progress["label"]
        if progress.get("checkpoint"):
            label += f"\n\nLast checkpoint: `{progress['checkpoint']}`"
        if progress.get("error"):
            label += f"\n\n⚠️ {progress['error'].splitlines()[0]}"
        losses = pd.DataFrame(self.ctx.runner.loss_series(job_id), columns=["step", "value", "series", "stage"])
        return label, self.ctx.runner.log_tail(job_id, 40), losses

    def abort(self, password: str, job_id: float | None):
        if password != self.ctx.settings.admin_password or launch_blocked_reason(self.ctx):
            raise gr.Error("Aborting a job needs the admin password.")
        if not job_id:
            raise gr.Error("Pick a job first.")
        self.ctx.runner.abort(int(job_id))
        return self.jobs_table()

    def load_into_chat(self, job_id: float | None) -> str:
        progress = self.ctx.runner.progress(int(job_id)) if job_id else {}
        if not progress.get("model_path"):
            raise gr.Error("Only a finished job's model can be loaded.")
        self.ctx.engine.reload(progress["model_path"])
        return f"Loaded `{progress['model_path']}` into the chat tab."

    @staticmethod
    def pick_job(table: pd.DataFrame, event: gr.SelectData) -> int:
        return int(table.iloc[event.index[0], 0])

    @staticmethod
    def load_config(path: str | None) -> list:
        if not path:
            raise gr.Error("Upload a job.json saved from this tab.")
        config = json.loads(Path(path).read_text())
        stages = config.get("stages") or [config.get("stage", "3")]
        return [
            config.get("base"),
            stages,
            config.get("lr"),
            config.get("max_steps"),
            config.get("epochs"),
            config.get("batch_size"),
            config.get("grad_accum"),
            config.get("max_image_size"),
            config.get("max_length"),
            config.get("seed"),
            config.get("eval_split"),
        ]


def build_finetune_tab(ctx: AppContext) -> dict:
    h = FinetuneHandlers(ctx)
    c = finetune_layout(ctx, launch_blocked_reason(ctx), describe_stages, h.jobs_table())
    form = [
        c["data_key"],
        c["base"],
        c["stages"],
        c["lr"],
        c["max_steps"],
        c["epochs"],
        c["batch_size"],
        c["grad_accum"],
        c["max_image_size"],
        c["max_length"],
        c["seed"],
        c["eval_split"],
        c["hardware"],
        c["strategy"],
    ]
    c["validate"].click(
        h.validate,
        [c["files"], c["export_ids"], c["base"]],
        [c["summary"], c["preview"], c["data_key"], c["page"]],
        api_name="validate_dataset",
    )
    c["page"].change(h.preview, [c["data_key"], c["page"]], c["preview"], api_visibility="private")
    c["stages"].change(describe_stages, c["stages"], c["stage_info"], api_visibility="private")
    c["preview_command"].click(h.preview_command, form, c["command"], api_name="preview_command")
    c["save_config"].click(h.save_config, form, c["config_file"], api_visibility="private")
    c["load_config"].upload(h.load_config, c["load_config"], form[1:12], api_visibility="private")
    c["launch"].click(h.launch, [c["password"], *form], [c["jobs"], c["job_id"]], api_name="launch_job")
    c["abort"].click(h.abort, [c["password"], c["job_id"]], c["jobs"], api_name="abort_job")
    c["refresh"].click(h.jobs_table, None, c["jobs"], api_visibility="private")
    c["jobs"].select(h.pick_job, c["jobs"], c["job_id"], api_visibility="private")
    watched = [c["progress"], c["log"], c["loss_plot"]]
    c["timer"].tick(h.watch, c["job_id"], watched, api_visibility="private", show_progress="hidden")
    c["job_id"].change(h.watch, c["job_id"], watched, api_name="watch_job")
    c["load_into_chat"].click(h.load_into_chat, c["job_id"], c["load_status"], api_name="load_job_into_chat")
    return c
