"""Answer templates: one fixed, readable sentence pattern per task, built from a sample's target.

The templates are fixed (only instructions vary) so that a small model spends its capacity on reading, and so that
`model.evaluation` can parse any answer back into fields (in any order). Scenes name the position before the content,
which the project's training notes found easier to learn: locate first, then read. On webpages the closed-vocabulary
fields come first (button and links), so that the open-vocabulary text after them starts at a nearly fixed offset.
Posters are read top down, title then date: with the date first (a fixed-length field, but one whose row moves with
the title and the gap below it) the default model never read a date in 4,100 steps, not even level 0's one format,
while it read the titles above them.

    ocr      sunset river                       (lines joined by a newline)
    poster   Title: JAZZ NIGHT. Date: MAR 02.
    webpage  Button: join. Links: home, shop, help. Site: bookly. Headline: Fresh Reads.
    scene    2 objects. top left: red circle. center: blue square.
"""

import random

from .vocab import load_vocab


def format_answer(task: str, target: dict) -> str:
    """The reference answer for a task key ("ocr", "poster", "webpage", "scene") and its target dict."""
    if task == "ocr":
        return target["text"]
    if task == "poster":
        return f"Title: {target['title']}. Date: {target['date']}."
    if task == "webpage":
        links = ", ".join(target["links"])
        return f"Button: {target['button']}. Links: {links}. Site: {target['site']}. Headline: {target['headline']}."
    if task == "scene":
        objects = target["objects"]
        head = f"{len(objects)} object{'' if len(objects) == 1 else 's'}."
        return " ".join([head] + [f"{o['position']}: {o['color']} {o['shape']}." for o in objects])
    raise ValueError(f"unknown task {task!r}")


def canonical_instruction(task: str) -> str:
    """The one instruction the app's presets use for a task key."""
    return load_vocab()["instructions"][task]["canonical"]


def pick_instruction(task: str, rng: random.Random) -> str:
    """The canonical instruction half the time (it is what the app sends), otherwise a paraphrase."""
    entry = load_vocab()["instructions"][task]
    return entry["canonical"] if rng.random() < 0.5 else rng.choice(entry["paraphrases"])
