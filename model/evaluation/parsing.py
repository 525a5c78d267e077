"""Parse free-form model answers back into the fields of the synthetic tasks' answer templates.

Parsing is lenient on purpose: case, spacing and trailing punctuation are ignored, fields are found by their labels
("Title:", "Links:", ...) in any order, and scene objects by their position words, so a prediction that is right in
content but sloppy in form is scored as right. The templates themselves live in `model.synthetic.answers`.
"""

import re
from functools import lru_cache

from ..synthetic.vocab import load_vocab

STRIP_CHARS = " \t\n.,;:!?\"'"


def normalize(text: str | None) -> str:
    """Lower case, single spaces, no surrounding whitespace or punctuation ("  Jazz  Night. " -> "jazz night")."""
    if text is None:
        return ""
    return " ".join(text.lower().split()).strip(STRIP_CHARS)


def parse_fields(text: str, keys: tuple[str, ...]) -> dict[str, str]:
    """Values of "Key: value" fields; a value runs to the next known key. The first occurrence of a key wins."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, keys)) + r")\s*:", re.IGNORECASE)
    matches = list(pattern.finditer(text))
    fields: dict[str, str] = {}
    for match, following in zip(matches, matches[1:] + [None]):
        key = match.group(1).lower()
        end = following.start() if following else len(text)
        fields.setdefault(key, normalize(text[match.end() : end]))
    return fields


def parse_poster(text: str) -> dict[str, str | None]:
    """{"title", "date"} from "Title: JAZZ NIGHT. Date: MAR 12."; a missing field is None."""
    fields = parse_fields(text, ("title", "date"))
    return {"title": fields.get("title"), "date": fields.get("date")}


def parse_webpage(text: str) -> dict:
    """{"site", "links" (list), "headline", "button"} from the webpage template; a missing field is None."""
    fields = parse_fields(text, ("site", "links", "headline", "button"))
    links = fields.get("links")
    return {
        "site": fields.get("site"),
        "links": [link for link in map(normalize, links.split(",")) if link] if links is not None else [],
        "headline": fields.get("headline"),
        "button": fields.get("button"),
    }


@lru_cache(maxsize=1)
def _scene_object_pattern() -> re.Pattern:
    """Matches "top left: red circle"; longer position names first so "top center" is not read as "center"."""
    positions = sorted(load_vocab()["scene"]["positions"], key=len, reverse=True)
    alternatives = "|".join(re.escape(p).replace(r"\ ", r"\s+") for p in positions)
    return re.compile(r"\b(" + alternatives + r")\s*:\s*([^.;\n]*)", re.IGNORECASE)


def parse_scene(text: str) -> dict:
    """{"count": int or None, "objects": [{"position", "color", "shape"}, ...]} in the order they appear.

    An object's colour and shape are the first known colour and shape words after its position (None if absent).
    """
    vocab = load_vocab()["scene"]
    count_match = re.match(r"\s*(\d+)\s+objects?\b", text, re.IGNORECASE)
    objects = []
    for match in _scene_object_pattern().finditer(text):
        words = normalize(match.group(2)).split()
        objects.append(
            {
                "position": " ".join(match.group(1).lower().split()),
                "color": next((w for w in words if w in vocab["colors"]), None),
                "shape": next((w for w in words if w in vocab["shapes"]), None),
            }
        )
    return {"count": int(count_match.group(1)) if count_match else None, "objects": objects}
