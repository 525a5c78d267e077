"""Scores for the synthetic tasks: parse a prediction, compare it with the sample's target, average over a set.

Per task (all values in 0..1; higher is better except `cer`):
    ocr      exact, cer (Levenshtein distance / reference length, capped at 1 per sample)
    poster   title, date, exact (both right)
    webpage  site, links, headline, button, field_accuracy (every link counts as a field), exact (all right)
    scene    exact (object set equal), count, position, color, shape, object (colour and shape right at a position)

Scene objects are matched to the target by position: colour and shape are judged only where a predicted object
sits at a target position, and extra or missing objects lower `position` and `object`.
"""

from collections import Counter

from ..synthetic.tasks import task_key
from .parsing import normalize, parse_poster, parse_scene, parse_webpage

MAIN_METRIC = {"ocr": "exact", "poster": "exact", "webpage": "field_accuracy", "scene": "exact"}


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between two strings, two-row dynamic programming."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def char_error_rate(prediction: str, reference: str) -> float:
    """Levenshtein distance over reference length, capped at 1.0 so one runaway answer cannot dominate a mean."""
    if not reference:
        return 0.0 if not prediction else 1.0
    return min(1.0, levenshtein(prediction, reference) / len(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of precision and recall of the normalised words (SQuAD's answer F1): partial credit for an answer
    that gets some words right, where exact match gives none."""
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def score_answer(prediction: str, reference: str) -> dict[str, float]:
    """Exact match, character error rate and token F1 of a free-form answer against the expected one, on normalised
    text (case, spacing and surrounding punctuation ignored): the scores of a fine-tuning job's held-out rows."""
    predicted, expected = normalize(prediction), normalize(reference)
    return {
        "exact": float(predicted == expected),
        "cer": char_error_rate(predicted, expected),
        "token_f1": token_f1(predicted, expected),
    }


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over a list of score dicts, plus "n", the number of rows."""
    if not scores:
        return {"n": 0.0}
    return {**{key: sum(s[key] for s in scores) / len(scores) for key in scores[0]}, "n": float(len(scores))}


def score_ocr(prediction: str, target: dict) -> dict[str, float]:
    """Exact match and character error rate on normalised text (lines compared as one space-separated string)."""
    predicted, reference = normalize(prediction), normalize(target["text"])
    return {"exact": float(predicted == reference), "cer": char_error_rate(predicted, reference)}


def score_poster(prediction: str, target: dict) -> dict[str, float]:
    """Title and date exact match, and both together."""
    parsed = parse_poster(prediction)
    title = float(parsed["title"] == normalize(target["title"]))
    date = float(parsed["date"] == normalize(target["date"]))
    return {"title": title, "date": date, "exact": title * date}


def score_webpage(prediction: str, target: dict) -> dict[str, float]:
    """Per-field accuracy; links score matched links over the longer of the two link lists (order ignored)."""
    parsed = parse_webpage(prediction)
    scores = {field: float(parsed[field] == normalize(target[field])) for field in ("site", "headline", "button")}
    reference_links = [normalize(link) for link in target["links"]]
    matched = sum((Counter(parsed["links"]) & Counter(reference_links)).values())
    scores["links"] = matched / max(len(parsed["links"]), len(reference_links), 1)
    n_fields = 3 + len(reference_links)
    scores["field_accuracy"] = (
        scores["site"] + scores["headline"] + scores["button"] + scores["links"] * len(reference_links)
    ) / n_fields
    scores["exact"] = float(all(scores[field] == 1.0 for field in ("site", "headline", "button", "links")))
    return scores


def score_scene(prediction: str, target: dict) -> dict[str, float]:
    """Object-set exact match, count accuracy, and position / colour / shape accuracy of objects matched by position."""
    parsed = parse_scene(prediction)
    predicted: dict[str, dict] = {}
    for obj in parsed["objects"]:
        predicted.setdefault(obj["position"], obj)  # the first mention of a position counts
    reference = {obj["position"]: obj for obj in target["objects"]}
    shared = set(predicted) & set(reference)
    larger = max(len(predicted), len(reference), 1)
    n_reference = max(len(reference), 1)
    color = sum(predicted[p]["color"] == reference[p]["color"] for p in shared)
    shape = sum(predicted[p]["shape"] == reference[p]["shape"] for p in shared)
    both = sum(
        predicted[p]["color"] == reference[p]["color"] and predicted[p]["shape"] == reference[p]["shape"]
        for p in shared
    )
    count = parsed["count"] if parsed["count"] is not None else len(parsed["objects"])
    as_set = {(o["position"], o["color"], o["shape"]) for o in parsed["objects"]}
    return {
        "exact": float(as_set == {(o["position"], o["color"], o["shape"]) for o in target["objects"]}),
        "count": float(count == len(target["objects"])),
        "position": len(shared) / larger,
        "color": color / n_reference,
        "shape": shape / n_reference,
        "object": both / larger,
    }


SCORERS = {"ocr": score_ocr, "poster": score_poster, "webpage": score_webpage, "scene": score_scene}


def score_sample(task: str, prediction: str, target: dict) -> dict[str, float]:
    """Score one prediction against a sample's target.

    Args:
        task: task key ("ocr", "poster", "webpage", "scene") or display name ("Scene description", ...).
        prediction: the model's answer text.
        target: `Sample.target` (or the "target" of a `data.json` record).

    Returns:
        Metric name -> value; see the module docstring for the names per task.
    """
    return SCORERS[task_key(task)](prediction or "", target)


def aggregate(task: str, scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over a list of `score_sample` results, plus "n", the number of samples."""
    task_key(task)  # validates the name
    return mean_scores(scores)
