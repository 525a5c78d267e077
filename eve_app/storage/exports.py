"""Exports of stored conversations: JSON (everything), Markdown (for reading), LLaVA (for fine-tuning).

These work on the dicts `Storage.get_conversation` returns, so they need no database and are easy to test. Every
export is a folder that holds its images (`images/<sha256>.<ext>`) and links them by relative paths, so it can be
zipped and read anywhere, and no server path leaves the app.
The LLaVA folder is what `python -m model.train --data <out_dir>/data.json` reads: image paths are relative to the
list's folder and each image's `<image>` placeholder starts the human turn that carried it.
"""

import json
import os
import shutil
from itertools import pairwise
from pathlib import Path

from model.shared import IMAGE_PLACEHOLDER

FORMATS = {"json": "conversations.json", "markdown": "conversations.md"}


def write_export(conversations: list[dict], out_dir: str | Path, fmt: str) -> Path:
    """`conversations.json` or `conversations.md` in `out_dir`, images copied beside it; returns the file."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {sorted(FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    portable = _with_copied_images(conversations, out_dir)
    path = out_dir / FORMATS[fmt]
    text = to_json(portable) if fmt == "json" else to_markdown(portable, out_dir)
    path.write_text(text, encoding="utf-8")
    return path


def _with_copied_images(conversations: list[dict], out_dir: Path) -> list[dict]:
    """The conversations with each image copied to `out_dir/images/` and its path made relative to `out_dir`."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    portable = []
    for conversation in conversations:
        messages = []
        for message in conversation["messages"]:
            names = []
            for path in message["images"]:
                name = f"images/{Path(path).name}"  # content-addressed: unique and stable
                if not (out_dir / name).exists():
                    shutil.copyfile(path, out_dir / name)
                names.append(name)
            messages.append({**message, "images": names})
        portable.append({**conversation, "messages": messages})
    return portable


def to_json(conversations: list[dict]) -> str:
    """Everything `get_conversation` returns, hidden messages and metadata included when asked for."""
    return json.dumps(conversations, indent=2, ensure_ascii=False)


def to_markdown(conversations: list[dict], relative_to: str | Path) -> str:
    """A readable transcript; image links are relative to `relative_to` (where the Markdown file will live)."""
    return "\n\n---\n\n".join(_conversation_markdown(conv, Path(relative_to)) for conv in conversations) + "\n"


def _conversation_markdown(conversation: dict, relative_to: Path) -> str:
    lines = [f"# {conversation['title'] or 'Untitled conversation'}", ""]
    details = [f"conversation {conversation['id']}", f"started {conversation['created_at']}"]
    if conversation["task"]:
        details.append(f"task: {conversation['task']}")
    lines += [f"_{' · '.join(details)}_", ""]
    for message in conversation["messages"]:
        speaker = "User" if message["role"] == "user" else "Assistant"
        task = f" ({message['task']})" if message["task"] else ""
        lines += [f"**{speaker}**{task}:", ""]
        for path in message["images"]:
            link = Path(os.path.relpath(path, relative_to)) if Path(path).is_absolute() else Path(path)
            lines += [f"![image]({link.as_posix()})", ""]
        lines += [message["text"], ""]
        notes = {
            "stopped": "stopped by the user",
            "interrupted": "interrupted: the app stopped before it finished",
            "error": f"error: {message['error']}",
        }
        if message["status"] in notes:
            lines += [f"_({notes[message['status']]})_", ""]
    return "\n".join(lines).rstrip()


def llava_sample(conversation: dict, image_names: dict[str, str]) -> dict | None:
    """One LLaVA sample from a conversation's visible, completed exchanges; None when none is left.

    A user message counts only when the next message is its answer with status "done": stopped or failed answers
    (and the question they answer) would teach the model half-answers. `image_names` maps stored paths to names
    inside the export folder.
    """
    messages = [m for m in conversation["messages"] if not m["hidden"]]
    turns, images = [], []
    for question, answer in pairwise(messages):
        if question["role"] != "user" or answer["role"] != "assistant" or answer["status"] != "done":
            continue
        placeholders = f"{IMAGE_PLACEHOLDER}\n" * len(question["images"])
        turns.append({"from": "human", "value": placeholders + question["text"]})
        turns.append({"from": "gpt", "value": answer["text"]})
        images += [f"images/{image_names[path]}" for path in question["images"]]
    if not turns:
        return None
    sample: dict = {"id": f"conversation-{conversation['id']}"}
    if images:
        sample["image"] = images[0] if len(images) == 1 else images
    sample["conversations"] = turns
    return sample


def write_llava(conversations: list[dict], out_dir: str | Path) -> Path:
    """Write `out_dir/data.json` and copy the images it uses into `out_dir/images`; returns the JSON path."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    # Stored files are named by content hash, so their base names are unique and stable across exports.
    image_names = {path: Path(path).name for conv in conversations for m in conv["messages"] for path in m["images"]}
    samples = [s for s in (llava_sample(conv, image_names) for conv in conversations) if s is not None]
    used = {name.removeprefix("images/") for s in samples for name in _as_list(s.get("image"))}
    for path, name in image_names.items():
        target = out_dir / "images" / name
        if name in used and not target.exists():
            shutil.copyfile(path, target)
    data_path = out_dir / "data.json"
    data_path.write_text(json.dumps(samples, indent=2, ensure_ascii=False), encoding="utf-8")
    return data_path


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else value
