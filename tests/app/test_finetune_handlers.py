"""Fine-tune tab handlers on bad input that never reaches storage or the runner."""

from pathlib import Path

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
    cid = ctx.storage.create_conversation(title="private", owner="browser:someone-else")
    with pytest.raises(gr.Error, match="not yours"):
        FinetuneHandlers(ctx).validate(None, str(cid), BASE, "", OWNER, REQUEST)


def test_validated_uploads_waiting_for_a_launch_cannot_fill_the_disk(tiny_checkpoint, tmp_path):
    """Together they stay below one upload's unpacked limit (here 20 KiB) until the retention time frees them."""
    from eve_app.context import make_context
    from eve_app.engine import Engine
    from eve_app.settings import Settings
    from eve_app.storage import Storage
    from model.synthetic import write_dataset

    settings = Settings(data_dir=tmp_path / "data", max_unpacked_mb=20 / 1024)
    ctx = make_context(settings, Engine.load(str(tiny_checkpoint)), Storage(data_dir=settings.data_dir))
    data_file = write_dataset(tmp_path / "dataset", ["ocr"], n=6, seed=1, level=0)
    files = [str(data_file), *map(str, (data_file.parent / "images").iterdir())]
    handlers = FinetuneHandlers(ctx)
    for _ in range(20):  # each upload fits; their sum soon does not
        try:
            handlers.validate(files, "", BASE, "", OWNER, REQUEST)
        except gr.Error as error:
            assert "Too many validated datasets are waiting" in str(error)
            break
    else:
        raise AssertionError("twenty uploads were kept without a limit")
    one_upload = 2 * sum(Path(f).stat().st_size for f in files)  # its files and the prepared train.json, at most
    assert ctx.uploads.pending_bytes() <= 20 * 1024 + one_upload


def test_a_lora_job_shows_its_adapter_size_loads_into_the_chat_and_merges(tiny_checkpoint, tmp_path):
    """A finished LoRA job: the table says how large its adapter is, the chat switches to it and back, and Merge
    writes a full checkpoint that the pickers then offer."""
    import dataclasses
    import os
    import subprocess
    import sys

    from eve_app.context import make_context
    from eve_app.engine import Engine
    from eve_app.jobs import JobConfig
    from eve_app.settings import Settings
    from eve_app.storage import Storage
    from model.synthetic import write_dataset

    settings = Settings(data_dir=tmp_path / "data", admin_password="s3cret")
    ctx = make_context(settings, Engine.load(str(tiny_checkpoint)), Storage(data_dir=settings.data_dir))
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
    job_id = ctx.storage.create_job(dataclasses.asdict(config), run_dir=run_dir)
    ctx.storage.update_job(job_id, status="done", final_metrics={"model_path": str(run_dir / "out")})
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
