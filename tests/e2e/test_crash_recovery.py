"""Nothing saved is lost: a server killed mid-answer restarts with its turns marked interrupted, and backups taken
while visitors write leave the live database whole."""

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.e2e.helpers import PROJECT_ROOT, free_port, start_server

PASSWORD = "crash-test"


def start_app(model: Path, data_dir: Path, port: int):
    return start_server(
        [
            "--model",
            str(model),
            "--data-dir",
            str(data_dir),
            "--partial-save-seconds",
            "0.2",
            "--admin-password",
            PASSWORD,
        ],
        port,
    )


def visible_messages(database) -> int:
    with database.engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM messages WHERE hidden = 0").scalar()


def rows(db: Path, query: str) -> list[tuple]:
    connection = sqlite3.connect(db, timeout=30)
    try:
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def test_killed_mid_answer_the_turns_come_back_interrupted_with_their_partial_text(endless_checkpoint, tmp_path):
    """kill -9 while four /answer calls stream, then restart on the same folder. The model never stops on its own:
    with plain random weights some answers ended after a few tokens, and when one of those took the engine first, the
    four were never all in flight at once."""
    data_dir, port = tmp_path / "data", free_port()
    image = tmp_path / "page.png"
    Image.new("RGB", (64, 64), "white").save(image)
    server = start_app(endless_checkpoint, data_dir, port)
    db = data_dir / "eve.db"
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(handle_file(str(image)), "OCR", "finished before the crash", 4, api_name="/answer")
        before = rows(db, "SELECT id, role, status, text FROM messages ORDER BY id")
        assert [r[2] for r in before] == ["ok", "done"]
        _jobs = [
            client.submit(handle_file(str(image)), "OCR", f"question {i}", 2000, api_name="/answer") for i in range(4)
        ]
        deadline = time.time() + 60
        streaming = []
        while time.time() < deadline:
            streaming = rows(db, "SELECT id, length(text) FROM messages WHERE status = 'streaming'")
            if len(streaming) == 4 and any(length > 0 for _, length in streaming):
                break
            time.sleep(0.1)
        assert len(streaming) == 4, f"four answers should be on record before the crash, got {streaming}"
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()

    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    server = start_app(endless_checkpoint, data_dir, port)
    try:
        assert rows(db, "PRAGMA integrity_check") == [("ok",)]
        after = rows(db, "SELECT id, role, status, text FROM messages ORDER BY id")
        assert after[:2] == before  # no earlier row lost
        answers = [r for r in after[2:] if r[1] == "assistant"]
        assert len(answers) == 4 and all(status == "interrupted" for _, _, status, _ in answers)
        assert any(text for *_, text in answers), "the partial text saved while streaming is kept"
        # The History shows them so (admin view: /answer calls belong to the api owner).
        listed = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            "question", PASSWORD, api_name="/search_conversations"
        )
        table = listed["data"] if isinstance(listed, dict) else listed
        assert len(table) == 4 and all(row[-1] == "interrupted" for row in table)
    finally:
        server.kill()
        server.wait(timeout=30)


@pytest.mark.parametrize("clients", [8])
def test_backups_while_visitors_answer_lose_nothing(running_app, tmp_path, clients):
    url, ctx = running_app
    image = tmp_path / "shared.png"
    Image.new("RGB", (64, 32), "white").save(image)
    before = visible_messages(ctx.conversations.store.database)
    turns = 3
    stop = threading.Event()
    backups: list[Path] = []

    def back_up() -> None:
        while not stop.is_set():
            out = tmp_path / f"backup-{len(backups)}.db"
            subprocess.run(
                [sys.executable, "-m", "eve_app.storage.backup", "--data-dir", str(ctx.settings.data_dir), str(out)],
                cwd=PROJECT_ROOT,
                check=True,
                capture_output=True,
            )
            backups.append(out)

    def visitor(n: int) -> None:
        client = Client(url, verbose=False)
        for turn in range(turns):
            client.predict(handle_file(str(image)), "OCR", f"visitor {n} turn {turn}", 4, api_name="/answer")

    backer = threading.Thread(target=back_up)
    backer.start()
    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    backer.join()

    assert visible_messages(ctx.conversations.store.database) == before + clients * turns * 2
    answers = ctx.conversations.store.list_conversations(search="visitor", limit=1000, owner="api")
    assert len(answers) == clients * turns and all(a["status"] == "done" for a in answers)
    assert backups, "no backup ran"
    for backup in backups:
        assert rows(backup, "PRAGMA integrity_check") == [("ok",)]
    # A backup taken after the last write holds every row.
    final = tmp_path / "final.db"
    subprocess.run(
        [sys.executable, "-m", "eve_app.storage.backup", "--data-dir", str(ctx.settings.data_dir), str(final)],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )
    assert rows(final, "SELECT count(*) FROM messages WHERE hidden = 0")[0][0] == visible_messages(
        ctx.conversations.store.database
    )
