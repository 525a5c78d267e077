"""Gradio's per-session copy of a component's configuration, as `ui.sessions` builds it."""

import gradio as gr

from eve_app.ui.sessions import LeanSessionState, lean_sessions


def test_each_session_keeps_its_own_value_in_the_components_configuration():
    with gr.Blocks() as demo:
        box = gr.Textbox(value="default", label="question")
    assert lean_sessions(demo)
    first, second = LeanSessionState(demo), LeanSessionState(demo)
    first._update_value_in_config(box._id, "from the first")
    second._update_value_in_config(box._id, "from the second")
    assert first.config_values[box._id]["props"]["value"] == "from the first"
    assert second.config_values[box._id]["props"]["value"] == "from the second"
    # Otherwise what Gradio builds for a session that read the component.
    expected = demo.default_config.config_for_block(box._id, [], box)
    expected["props"]["value"] = "from the first"
    assert first.config_values[box._id] == expected
