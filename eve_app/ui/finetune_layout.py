"""Components of the fine-tune tab (layout only; events are wired in `finetune.py`)."""

from collections.abc import Callable

import gradio as gr
import pandas as pd

from ..context import AppContext
from .job_form import drawn_rows

STAGES = ["1", "2.1", "2.2", "3"]
STRATEGIES = ["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]
PREVIEW_COLUMNS = ["row", "id", "images", "turns", "problems"]
JOB_COLUMNS = ["job", "status", "created", "stages", "method", "weights"]
# Gradio gives the loss plot the block's full height below its label, so the plot's lower edge (with the legend, which
# Gradio puts under the plot) is cut off by the label's height: the block is made a column the plot fills instead.
# The model choice keeps a readable width: on a phone its row wraps instead of squeezing it. The command and job.json
# boxes, empty until Preview or Save, are not each a 240 px blank (on a phone, a screen of nothing between them). The
# command wraps in its box instead of scrolling sideways (Gradio's own `wrap_lines` made the box 1,300 px high).
# Phones (up to 768 px): the jobs table fits the width instead of scrolling sideways (its six columns took 590 px of
# 346). Gradio sizes each column to its header's and widest value's width on one line, in its font (the widths are
# measured on a hidden sizing row); here a cell wraps between words, in a smaller sans font with less padding, so that
# the longest word sets a column's width. The creation date is kept whole ("2026-12-" / "07 15:41" otherwise): it wraps
# at the space before the time only.
FINETUNE_CSS = f"""
#loss-plot {{ display: flex; flex-direction: column; }}
#loss-plot .vega-embed {{ flex: 1 1 0; min-height: 0; height: auto; }}
#command .empty, #job-config .empty {{ min-height: var(--size-16); height: auto; }}
#command .cm-content {{ white-space: pre-wrap; overflow-wrap: anywhere; flex-shrink: 1; }}
@media (max-width: 768px) {{
    #jobs-table table, #jobs-table .virtual-row {{ font-family: var(--font-sans); font-size: var(--text-sm); }}
    #jobs-table .sizing-body td, #jobs-table .cell-wrap {{ padding: var(--size-1); }}
    #jobs-table .sizing-body td, #jobs-table span.text {{ white-space: normal; text-overflow: clip; }}
    #jobs-table .sizing-body td:nth-child({JOB_COLUMNS.index("created") + 1}) .cell-wrap {{ min-width: 10ch; }}
}}
"""

# The preview command wraps at spaces and also, as browsers do, after a hyphen: "--config_file" read "--" / "config_file"
# on a phone, and no CSS turns off breaks after hyphens. The editor draws each flag as an element, with a class of its
# own (one that the editor makes up, so it is read from the page): a rule keeps those elements on one line. A quoted
# argument (the pipeline's launcher) is an element too, but it holds spaces and may be wider than the box, so a class
# found on any element with a space is left out. Run after each preview, once the editor has drawn the new command.
KEEP_FLAGS_WHOLE_JS = """() => {
    const apply = tries => {
        const tokens = [...document.querySelectorAll('#command .cm-line span')];
        if (!tokens.some(token => token.textContent.startsWith('-'))) {
            if (tries > 0) requestAnimationFrame(() => apply(tries - 1));
            return;
        }
        const classes = token => [...token.classList];
        const spaced = new Set(tokens.filter(token => /\\s/.test(token.textContent)).flatMap(classes));
        const flags = new Set(tokens.filter(token => token.textContent.startsWith('-')).flatMap(classes));
        let style = document.getElementById('command-flags');
        if (!style) {
            style = document.createElement('style');
            style.id = 'command-flags';
            document.head.append(style);
        }
        style.textContent = [...flags].filter(name => !spaced.has(name))
            .map(name => `#command .cm-line span.${CSS.escape(name)} { white-space: nowrap; }`).join('\\n');
    };
    apply(30);
}"""


def _data_section(c: dict) -> None:
    with gr.Accordion("1 · Data", open=True):
        gr.Markdown(
            'A LLaVA-format JSON (`[{"id", "image", "conversations": [{"from": "human", '
            '"value": "<image>\\n…"}, {"from": "gpt", "value": "…"}]}]`) with its images as a zip '
            "or as files, or conversations exported from the History tab."
        )
        with gr.Row():
            c["files"] = gr.File(
                label="JSON + images (zip or files)", file_count="multiple", type="filepath", elem_id="finetune-files"
            )
            c["export_ids"] = gr.Textbox(label="…or History conversation ids", placeholder="e.g. 3, 5, 8")
        c["validate"] = gr.Button("Validate", variant="secondary")
        c["summary"] = gr.Markdown(elem_id="validation-summary")
        c["dataset"] = gr.Textbox(
            label="Dataset id (what /launch_job takes)", interactive=False, max_lines=1, elem_id="dataset-id"
        )
        c["page"] = gr.Number(value=1, precision=0, minimum=1, label="Preview page")
        c["preview"] = gr.Dataframe(
            headers=PREVIEW_COLUMNS,  # before validation too (not Gradio's "1 2 3")
            label="Rows and their problems",
            interactive=False,
            wrap=True,
            elem_id="rows-preview",
        )


def _setup_section(c: dict, ctx: AppContext, describe_stages: Callable[[list[str]], str], base_choices) -> None:
    gpus = ctx.engine.gpu_count
    with gr.Accordion("2 · Job", open=True):
        bases = list(base_choices)
        c["base"] = gr.Dropdown(
            bases,
            value=bases[0],
            allow_custom_value=True,
            label="Base checkpoint (a finished job, the default model, or a Hub id)",
        )
        c["stages"] = gr.CheckboxGroup(STAGES, value=["3"], label="Stages (several run as a pipeline, in order)")
        c["stage_info"] = gr.Markdown(describe_stages(["3"]))
        for row in drawn_rows():  # the training settings, as `job_form.FORM` declares them
            with gr.Row():
                for name, component in row.items():
                    c[name] = component()
        hardware = ["CPU"] + [f"{n} GPU{'s' if n > 1 else ''}" for n in range(1, gpus + 1)]
        with gr.Row():
            c["hardware"] = gr.Radio(hardware, value=hardware[-1], label="Hardware")
            c["strategy"] = gr.Radio(STRATEGIES, value="ddp", label="Multi-GPU strategy", visible=gpus > 0)
        c["memory_plan"] = gr.Markdown(elem_id="memory-plan")
        with gr.Row():
            c["preview_command"] = gr.Button("Preview command")
            c["save_config"] = gr.Button("Save job config")
            c["load_config"] = gr.UploadButton("Load job config", file_types=[".json"])
        c["command"] = gr.Code(label="Exact command", language="shell", interactive=False, elem_id="command")
        c["config_file"] = gr.File(label="job.json", elem_id="job-config")


def _jobs_section(c: dict, blocked: str | None, jobs: pd.DataFrame, base_choices) -> None:
    with gr.Accordion("3 · Run", open=True):
        if blocked:
            gr.Markdown(f"🔒 {blocked} Validation and command preview still work.")
        else:
            gr.Markdown("🔒 Launching, aborting, watching a job and loading its model need the admin password.")
        with gr.Row():
            c["password"] = gr.Textbox(
                label="Admin password", type="password", interactive=blocked is None, elem_id="admin-password"
            )
            c["watch"] = gr.Button("Watch selected job", interactive=blocked is None)
            c["launch"] = gr.Button("Launch", variant="primary", interactive=blocked is None)
            c["abort"] = gr.Button("Abort selected job", variant="stop", interactive=blocked is None)
            c["refresh"] = gr.Button("Refresh")
        c["launch_status"] = gr.Markdown(elem_id="launch-status")
        c["jobs"] = gr.Dataframe(
            value=jobs,
            label="Jobs (one runs at a time; click a row to watch it)",
            interactive=False,
            elem_id="jobs-table",
        )
        c["job_id"] = gr.Number(value=None, precision=0, label="Watching job", elem_id="watched-job")
        c["progress"] = gr.Markdown(elem_id="job-progress")
        c["loss_plot"] = gr.LinePlot(
            x="step",
            y="value",
            color="series",
            x_title="optimizer step",
            y_title="loss",
            color_title="loss on",
            label="Loss",
            height=260,
            elem_id="loss-plot",
        )
        c["log"] = gr.Textbox(label="Log (last lines)", lines=8, max_lines=12, autoscroll=True)
        c["results"] = gr.HTML(elem_id="job-results")
        with gr.Row():
            c["compare"] = gr.Button("Compare base and tuned answers", interactive=blocked is None, scale=1)
            c["compare_status"] = gr.Markdown()
        with gr.Row():
            c["chat_model"] = gr.Dropdown(
                list(base_choices),
                value=next(iter(base_choices)),
                label="Model for the chat (every visitor's)",
                allow_custom_value=True,
                scale=3,
                min_width=260,
            )
            c["load_into_chat"] = gr.Button("Load into chat", scale=1)
            c["merge"] = gr.Button("Merge selected LoRA job into a full model", scale=1, interactive=blocked is None)
        c["load_status"] = gr.Markdown()
        c["timer"] = gr.Timer(2.0)


def finetune_layout(ctx: AppContext, blocked: str | None, describe_stages, jobs: pd.DataFrame, base_choices) -> dict:
    c: dict = {}
    _data_section(c)
    _setup_section(c, ctx, describe_stages, base_choices)
    _jobs_section(c, blocked, jobs, base_choices)
    return c
