"""The real app, started in this process on a free port with the project's small default model."""

import time
from pathlib import Path

import pytest

from tests.e2e.helpers import MODEL, free_port


@pytest.fixture(scope="session")
def running_app(tmp_path_factory):
    """(url, app context) of a live server; its data directory is a fresh temporary folder."""
    from app import create_app, launch_options

    data_dir: Path = tmp_path_factory.mktemp("app-data")
    port = free_port()
    demo, ctx = create_app(["--model", MODEL, "--data-dir", str(data_dir), "--port", str(port)])
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(ctx))
    url = f"http://127.0.0.1:{port}/"
    yield url, ctx
    demo.close()
    time.sleep(0.5)


@pytest.fixture
def client(running_app):
    from gradio_client import Client

    return Client(running_app[0], verbose=False)
