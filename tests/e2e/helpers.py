"""Shared by the end-to-end tests: which model they run, and a free local port."""

import os
import socket

from eve_app.settings import DEFAULT_MODEL

# The e2e tests run the shipped default model; EVE_TEST_MODEL points them at another checkpoint while developing.
MODEL = os.environ.get("EVE_TEST_MODEL", DEFAULT_MODEL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
