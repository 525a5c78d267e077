"""Fine-tune tab handlers on bad input that never reaches storage or the runner."""

import time
from types import SimpleNamespace

import gradio as gr
import pytest

from eve_app.ui.finetune import FinetuneHandlers
from tests.app.conftest import OWNER, REQUEST

BASE = "default model (eve-tiny)"


def test_history_ids_that_are_not_numbers_get_a_clear_message(ctx):
    with pytest.raises(gr.Error, match="ids are numbers"):
        FinetuneHandlers(ctx).validate(None, "3, three", BASE, "", OWNER, REQUEST)


def test_validating_nothing_asks_for_data(ctx):
    with pytest.raises(gr.Error, match="Upload a LLaVA JSON"):
        FinetuneHandlers(ctx).validate(None, "", BASE, "", OWNER, REQUEST)


def test_a_base_checkpoint_outside_the_allowed_folders_is_refused(ctx, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(gr.Error, match="Base checkpoints must be"):
        FinetuneHandlers(ctx).validate(None, "", "/etc", "", OWNER, REQUEST)


def test_history_ids_of_someone_else_are_not_exported(ctx):
    cid = ctx.conversations.store.save_question(None, "private", owner="browser:someone-else").conversation_id
    with pytest.raises(gr.Error, match="not yours"):
        FinetuneHandlers(ctx).validate(None, str(cid), BASE, "", OWNER, REQUEST)


def _small_context(tiny_checkpoint, tmp_path, **limits):
    """A context with its own data folder and the given limits."""
    from eve_app.context import make_context
    from eve_app.serving.transformers_engine import TransformersEngine
    from eve_app.settings import Settings
    from eve_app.storage import Database

    settings = Settings(data_dir=tmp_path / "data", **limits)
    return make_context(settings, TransformersEngine.load(str(tiny_checkpoint)), Database(data_dir=settings.data_dir))


def _dataset(tmp_path, name: str) -> list[str]:
    from model.synthetic import write_dataset

    data_file = write_dataset(tmp_path / name, ["ocr"], n=6, seed=1, level=0)
    return [str(data_file), *map(str, (data_file.parent / "images").iterdir())]


def _from(host: str) -> SimpleNamespace:
    return SimpleNamespace(session_hash=f"session-{host}", headers={}, client=SimpleNamespace(host=host))


def test_one_visitor_cannot_fill_the_pending_uploads_for_everyone(tiny_checkpoint, tmp_path):
    """A visitor validating again and again replaces their own oldest uploads beyond their share (one upload's
    unpacked limit, here 20 KiB) and is never refused; meanwhile another visitor validates at once."""
    ctx = _small_context(tiny_checkpoint, tmp_path, max_unpacked_mb=20 / 1024, pending_uploads_mb=40 / 1024)
    files = _dataset(tmp_path, "dataset")
    handlers, alice, bob = FinetuneHandlers(ctx), _from("10.0.0.1"), _from("10.0.0.2")
    keys = [handlers.validate(files, "", BASE, "", OWNER, alice)[2] for _ in range(20)]
    assert ctx.uploads.get(keys[-1]) is not None and ctx.uploads.get(keys[0]) is None  # the oldest made room
    assert ctx.uploads.pending_bytes(visitor="10.0.0.1") <= 20 * 1024
    summary, _, key, _ = handlers.validate(files, "", BASE, "", OWNER, bob)
    assert "6 samples, 6 valid" in summary and ctx.uploads.get(key) is not None
    assert ctx.uploads.pending_bytes() <= 40 * 1024
    # Visitors with no room left in the budget are told why, and nothing of theirs is staged.
    ctx.uploads.budget = ctx.uploads.pending_bytes(visitor="10.0.0.1") + 20 * 1024 - 1
    folders = sorted((ctx.settings.data_dir / "uploads").iterdir())
    with pytest.raises(gr.Error, match="Too many validated datasets of other visitors are waiting"):
        handlers.validate(files, "", BASE, "", OWNER, _from("10.0.0.3"))
    assert sorted((ctx.settings.data_dir / "uploads").iterdir()) == folders


def test_an_upload_being_validated_is_not_swept(tiny_checkpoint, tmp_path, monkeypatch):
    """The sweeper runs while a validation is under way (here: between staging and checking the rows), with a
    retention of zero: the folder being validated is registered, so it stays."""
    from eve_app.jobs import validation

    ctx = _small_context(tiny_checkpoint, tmp_path, upload_retention_minutes=0)
    real_for_job = validation.ImageSettings.for_job
    swept: list[int] = []

    def sweep_meanwhile(*args, **kwargs):
        time.sleep(0.01)  # the folder is older than the (zero) retention
        swept.append(ctx.uploads.sweep())
        return real_for_job(*args, **kwargs)

    monkeypatch.setattr(validation.ImageSettings, "for_job", sweep_meanwhile)
    summary, *_ = FinetuneHandlers(ctx).validate(_dataset(tmp_path, "dataset"), "", BASE, "", OWNER, REQUEST)
    assert swept == [0] and "6 samples, 6 valid" in summary, summary


def test_the_memory_plan_follows_the_form_and_says_what_the_hardware_cannot_hold(ctx):
    """The plan needs no dataset; a batch no machine holds gets Launch's refusal; a bad number is said, not raised."""
    handlers = FinetuneHandlers(ctx)
    plan = handlers.memory_plan("", BASE, ["3"], 4, "", "", "CPU", "ddp")
    assert "per device" in plan and "the chosen hardware" in plan and ": fits" in plan and "refuses" not in plan
    assert "on one GPU (bf16)" in plan and "fits 24 GB, 48 GB, 80 GB" in plan
    huge = handlers.memory_plan("", BASE, ["3"], 1_000_000, "", "", "CPU", "ddp")
    assert "Launch refuses this: This job needs about" in huge and "No method fits" in huge
    assert handlers.memory_plan("", BASE, ["3"], 4, "long", "", "CPU", "ddp").startswith("No memory plan: The max")
    # The method and the LoRA rank chosen in the form change the plan (more adapter parameters at a higher rank).
    low, high = (handlers.memory_plan("", BASE, ["3"], 4, "", "", "CPU", "ddp", "lora", r) for r in ("4", "64"))
    assert "LoRA" in low and low != high


def test_a_valid_admin_token_lets_the_admin_in_while_their_address_is_locked(ctx):
    """The page of a browser with a valid admin token is unlocked on load; from it the right password passes a
    lock-out that others' guesses from the same address caused."""
    import dataclasses

    from eve_app.security import AdminGate

    gate = AdminGate("s3cret", max_failures=1, delay=0)
    handlers = FinetuneHandlers(dataclasses.replace(ctx, admin=gate))
    with pytest.raises(gr.Error, match="Wrong admin password"):
        handlers.abort("guess", None, REQUEST)
    with pytest.raises(gr.Error, match="Too many wrong admin passwords"):
        handlers.abort("s3cret", None, REQUEST)
    _, unlocked = handlers.restore(None, gate.issue_token())
    assert unlocked is True
    with pytest.raises(gr.Error, match="Pick a job first"):  # past the password check
        handlers.abort("s3cret", None, REQUEST, unlocked)
    # The unlocked page needs no password for any admin action (after a reload its password field is empty).
    with pytest.raises(gr.Error, match="Pick a job first"):
        handlers.abort("", None, REQUEST, unlocked)
    with pytest.raises(gr.Error, match="Pick a finished job first"):
        handlers.compare("", None, REQUEST, unlocked)
    _, stranger = handlers.restore(None, "made-up-token-0123456789")
    with pytest.raises(gr.Error, match="Too many wrong admin passwords"):
        handlers.abort("s3cret", None, REQUEST, stranger)


def test_server_paths_are_redacted_only_where_they_are_whole(ctx):
    """The project folder's name inside a longer name (a sibling folder, another path ending the same way) is not
    a server path of this app and stays as written; the interpreter inside the project keeps its own name."""
    from eve_app.ui.finetune import redact_paths
    from model.shared import PROJECT_ROOT

    root = str(PROJECT_ROOT)
    text = f"{root}/model/train.py, {root}-backup/notes.txt, /mnt{root}/x, '{root}'."
    redacted = FinetuneHandlers(ctx).redact(text)
    assert redacted == f"./model/train.py, {root}-backup/notes.txt, /mnt{root}/x, '.'."
    names = {"/srv/app": ".", "/srv/app/.venv/bin/python": "python"}
    assert redact_paths("/srv/app/.venv/bin/python -m model.train", names) == "python -m model.train"


@pytest.mark.slow  # runs a training job
def test_a_lora_job_shows_its_adapter_size_loads_into_the_chat_and_merges(tiny_checkpoint, tmp_path):
    """A finished LoRA job: the table says how large its adapter is, the chat switches to it and back, and Merge
    writes a full checkpoint that the pickers then offer."""
    import dataclasses
    import os
    import subprocess
    import sys

    from eve_app.context import make_context
    from eve_app.jobs import JobConfig
    from eve_app.serving.transformers_engine import TransformersEngine
    from eve_app.settings import Settings
    from eve_app.storage import Database
    from model.synthetic import write_dataset

    settings = Settings(data_dir=tmp_path / "data", admin_password="s3cret")
    ctx = make_context(settings, TransformersEngine.load(str(tiny_checkpoint)), Database(data_dir=settings.data_dir))
    data_file = write_dataset(tmp_path / "dataset", ["ocr"], n=4, seed=1, level=0)
    run_dir = settings.data_dir / "runs" / "job-1"
    config = JobConfig(base=str(tiny_checkpoint), data=str(data_file), method="lora", max_steps=2, batch_size=2)
    argv = ["--base", str(tiny_checkpoint), "--data", str(data_file), "--output-dir", str(run_dir / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trained = subprocess.run(
        [sys.executable, "-m", "model.train", *argv, "--method", "lora", "--max-steps", "2", "--batch-size", "2"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    job_id = ctx.jobs.create_job(dataclasses.asdict(config), run_dir=run_dir)
    ctx.jobs.update_job(job_id, status="done", final_metrics={"model_path": str(run_dir / "out")})
    handlers = FinetuneHandlers(ctx)

    row = handlers.jobs_table().iloc[0]
    assert row["method"] == "lora" and row["weights"].startswith("adapter ") and row["weights"].endswith(" MB")
    assert float(row["weights"].split()[1]) < 1.0  # megabytes where the model is more

    handlers.load_into_chat("s3cret", "job-1-3", REQUEST)
    assert ctx.engine.name == "job-1-3" and ctx.engine.checkpoint_dir == run_dir / "out"
    handlers.load_into_chat("s3cret", BASE, REQUEST)  # and back
    assert ctx.engine.name == "eve-tiny"

    with pytest.raises(gr.Error, match="admin password|Wrong"):
        handlers.merge("guess", job_id, REQUEST)
    message, _, _ = handlers.merge("s3cret", job_id, REQUEST)
    assert "Merged job 1" in message and (run_dir / "merged" / "config.json").is_file()
    assert "job-1-3-merged" in handlers.base_choices()
    handlers.load_into_chat("s3cret", "job-1-3-merged", REQUEST)
    assert ctx.engine.name == "job-1-3-merged"


def test_job_json_carries_every_saved_setting_of_the_form_back_into_it(ctx, tmp_path):
    """Save writes the form's settings to job.json and Load puts each one back; the handlers take the same fields by
    name, and a value the form cannot use is refused naming the field (the form, the handlers' arguments and job.json
    come from one list of fields)."""
    from eve_app.ui.job_form import FORM_FIELDS, LOADED_FIELDS

    handlers = FinetuneHandlers(ctx)
    _, _, dataset, _ = handlers.validate(_dataset(tmp_path, "data"), "", BASE, "", OWNER, REQUEST)
    form = {
        "dataset": dataset,
        "base": BASE,
        "stages": ["2.2", "3"],
        "lr": "0.0001",
        "max_steps": "12",
        "epochs": 1.0,
        "batch_size": 2,
        "grad_accum": 3,
        "max_image_size": "64",
        "max_length": "512",
        "seed": 7,
        "eval_split": 0.2,
        "hardware": "CPU",
        "strategy": "ddp",
        "method": "lora",
        "lora_rank": "16",
    }
    assert list(form) == FORM_FIELDS  # the endpoints' order, for callers that pass the settings by position
    path = handlers.save_config(*form.values())
    handlers.form = {name: name for name in FORM_FIELDS}  # the components stand in as their names
    assert handlers.load_config(path) == {name: form[name] for name in LOADED_FIELDS}
    command = handlers.preview_command(**form)
    assert "--lora-rank 16" in command and "--grad-accum 3" in command and "--stages 2.2,3" in command
    with pytest.raises(gr.Error, match="The learning rate must be a number"):
        handlers.preview_command(**{**form, "lr": "fast"})
    with pytest.raises(gr.Error, match="The LoRA rank must be a whole number"):
        handlers.launch_job(**{**form, "lora_rank": "1.5"}, password="s3cret", request=REQUEST)
    with pytest.raises(gr.Error, match="Batch size must be a whole number of at least 1; got 'many'"):
        handlers.preview_command(**{**form, "batch_size": "many"})
