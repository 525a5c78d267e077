"""Fine-tune tab handlers on bad input that never reaches storage or the runner."""

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
