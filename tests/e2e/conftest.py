"""The real app, started in this process on a free port with the project's small default model."""

import os
import socket
import time
from pathlib import Path

import pytest

from eve_app.settings import DEFAULT_MODEL

# The e2e tests run the shipped default model; EVE_TEST_MODEL points them at another checkpoint while developing.
MODEL = os.environ.get("EVE_TEST_MODEL", DEFAULT_MODEL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def running_app(tmp_path_factory):
    """(url, app context) of a live server; its data directory is a fresh temporary folder."""
    from app import create_app
    from eve_app.ui import CSS

    data_dir: Path = tmp_path_factory.mktemp("app-data")
    port = free_port()
    demo, ctx = create_app(["--model", MODEL, "--data-dir", str(data_dir), "--port", str(port)])
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=CSS,
                allowed_paths=[str(data_dir.resolve())])
    url = f"http://127.0.0.1:{port}/"
    yield url, ctx
    demo.close()
    time.sleep(0.5)


@pytest.fixture
def client(running_app):
    from gradio_client import Client

    return Client(running_app[0], verbose=False)
