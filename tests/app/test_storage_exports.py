"""Exports: JSON for everything, Markdown for reading, and a LLaVA folder the training entry point reads."""

import json
import struct
import zlib
from pathlib import Path

import pytest

from eve_app.storage import ConversationStore, Database
from tests.app.conftest import answered


def png_bytes(shade: int) -> bytes:
    """A valid 2x2 RGB PNG; the shade makes the content (and hash) differ."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = (b"\x00" + bytes([shade]) * 6) * 2
    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture
def filled(tmp_path) -> tuple[ConversationStore, list[int]]:
    """Three conversations: mixed outcomes with reused and hidden images, a failed one, a single-image one."""
    storage = ConversationStore(Database(data_dir=tmp_path / "data"))
    a, b, hidden = png_bytes(1), png_bytes(2), png_bytes(3)
    first = storage.save_question(None, "Compare the two", task="describe", images=[(a, "a.png"), (b, "b.png")])
    mixed = first.conversation_id
    answered(storage, mixed, "The first is darker.", "done", record={"model": "eve", "new_tokens": 5})
    storage.save_question(mixed, "Again?", images=[(a, "a.png")])
    answered(storage, mixed, "The fir", "stopped")  # partial: not training data
    storage.save_question(mixed, "Thanks, which is brighter?")
    answered(storage, mixed, "The second.", "done")
    undone = storage.save_question(mixed, "Undone question", images=[(hidden, "c.png")]).message_id
    storage.hide_messages([undone, answered(storage, mixed, "Undone answer", "done")])
    failed = storage.save_question(None, "Broken: hello?").conversation_id
    answered(storage, failed, "", "error", error="out of memory")
    single = storage.save_question(None, "What colour?", images=[(b, "b.png")]).conversation_id
    answered(storage, single, "Dark grey.", "done")
    yield storage, [mixed, failed, single]
    storage.database.close()


def test_export_json(filled, tmp_path):
    storage, ids = filled
    path = storage.export(ids, tmp_path / "json", "json")
    exported = json.loads(path.read_text())
    assert [c["id"] for c in exported] == ids
    assert exported[0]["task"] == "describe" and len(exported[0]["messages"]) == 6
    assert exported[0]["messages"][1]["generation"]["model"] == "eve"
    assert exported[1]["messages"][1]["error"] == "out of memory"
    # Images are copied beside the file and named relative to it: no server path in the export.
    images = [name for c in exported for m in c["messages"] for name in m["images"]]
    assert images and all(name.startswith("images/") and (path.parent / name).is_file() for name in images)
    assert str(storage.data_dir) not in path.read_text()
    hidden = storage.export(ids[:1], tmp_path / "all", "json", include_hidden=True)
    assert len(json.loads(hidden.read_text())[0]["messages"]) == 8


def test_export_markdown(filled, tmp_path):
    storage, ids = filled
    path = storage.export(ids, tmp_path / "md", "markdown")
    markdown = path.read_text()
    for words in ("Compare the two", "The first is darker.", "The fir", "Dark grey.", "# Broken", "out of memory"):
        assert words in markdown
    assert "Undone" not in markdown
    links = [line[len("![image](") : -1] for line in markdown.splitlines() if line.startswith("![image](")]
    assert len(links) == 4 and all(link.startswith("images/") for link in links)
    assert all((path.parent / link).is_file() for link in links)


def test_export_llava(filled, tmp_path):
    storage, ids = filled
    data_path = storage.export_llava(ids, tmp_path / "llava")
    assert data_path == tmp_path / "llava" / "data.json"
    samples = json.loads(data_path.read_text())
    assert [s["id"] for s in samples] == [f"conversation-{ids[0]}", f"conversation-{ids[2]}"]  # failed one: none
    mixed, single = samples
    assert [t["from"] for t in mixed["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert mixed["conversations"][0]["value"] == "<image>\n<image>\nCompare the two"
    assert mixed["conversations"][2]["value"] == "Thanks, which is brighter?"  # the stopped exchange is left out
    assert isinstance(mixed["image"], list) and isinstance(single["image"], str)
    for sample in samples:
        names = [sample["image"]] if isinstance(sample["image"], str) else sample["image"]
        placeholders = sum(t["value"].count("<image>") for t in sample["conversations"])
        assert placeholders == len(names)
        assert all((tmp_path / "llava" / name).is_file() for name in names)
    copied = sorted(p.name for p in (tmp_path / "llava" / "images").iterdir())
    assert len(copied) == 2  # images a and b once each; the hidden one's image is not exported


def test_llava_export_reads_as_training_data(filled, tmp_path):
    from model.train.data import load_records

    storage, ids = filled
    records = load_records([storage.export_llava(ids, tmp_path / "llava")])
    paths = [path for record in records for path in record.image_paths(record.load())]
    assert len(records) == 2 and len(paths) == 3 and all(Path(p).is_file() for p in paths)
