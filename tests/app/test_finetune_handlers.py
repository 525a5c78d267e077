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
