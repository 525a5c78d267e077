"""Evaluation of the synthetic tasks: parse answers back into fields and score them against targets."""

from .metrics import MAIN_METRIC, aggregate, char_error_rate, levenshtein, score_sample
from .parsing import normalize, parse_poster, parse_scene, parse_webpage

__all__ = [
    "MAIN_METRIC",
    "aggregate",
    "char_error_rate",
    "levenshtein",
    "normalize",
    "parse_poster",
    "parse_scene",
    "parse_webpage",
    "score_sample",
]
