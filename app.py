"""Starts the EVEv2 demo: parse settings, load the model, open the log, build the UI, launch.

python app.py                                   # the project's small model, CPU, http://127.0.0.1:7860
python app.py --model BAAI/EVE-7B-HD-v2.0 --device cuda --quantization 4bit
"""

import os

from eve_app.context import AppContext
from eve_app.engine import Engine
from eve_app.jobs import JobRunner
from eve_app.presets import load_presets
from eve_app.settings import parse_settings
from eve_app.storage import Storage
from eve_app.ui import CSS, build_app

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def create_app(argv: list[str] | None = None):
    settings = parse_settings(argv)
    engine = Engine.load(settings.model, settings.device, settings.dtype, settings.quantization)
    storage = Storage(settings.db_url, data_dir=settings.data_dir)
    runner = JobRunner(storage, settings.data_dir)
    runner.recover()  # jobs that ran while the app was down: re-attach the live ones, close the dead ones
    runner.start_monitor()
    ctx = AppContext(engine, storage, load_presets(engine.checkpoint_dir), settings, runner)
    return build_app(ctx), ctx


if __name__ == "__main__":
    demo, ctx = create_app()
    settings = ctx.settings
    demo.launch(
        server_name=settings.host, server_port=settings.port, css=CSS, allowed_paths=[str(settings.data_dir.resolve())]
    )
