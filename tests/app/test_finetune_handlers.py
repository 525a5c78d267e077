"""Fine-tune tab handlers on bad input that never reaches storage or the runner."""

import gradio as gr
import pytest

from eve_app.ui.finetune import FinetuneHandlers


def test_history_ids_that_are_not_numbers_get_a_clear_message():
    with pytest.raises(gr.Error, match="ids are numbers"):
        FinetuneHandlers(ctx=None).validate(None, "3, three", "")


def test_validating_nothing_asks_for_data():
    with pytest.raises(gr.Error, match="Upload a LLaVA JSON"):
        FinetuneHandlers(ctx=None).validate(None, "", "")
