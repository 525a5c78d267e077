"""Vocabularies for the synthetic tasks: the JSON tables next to this file and the vendored English word list.

The word list (`assets/wordlist.txt`, see `assets/ATTRIBUTION.md`) is split deterministically into a training part and
a held-out part, so that reading can be measured on words the model never saw: a word is held out when the CRC32 of
its spelling is divisible by `HELD_OUT_MODULUS` (about one word in ten), which is stable across machines and runs.
"""

import json
import random
import string
import zlib
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..shared import PROJECT_ROOT

VOCAB_PATH = Path(__file__).with_name("vocab.json")
WORDLIST_PATH = PROJECT_ROOT / "assets" / "wordlist.txt"
HELD_OUT_MODULUS = 10
SPLITS = ("all", "train", "test")


@lru_cache(maxsize=1)
def load_vocab() -> dict[str, Any]:
    """The parsed `vocab.json` (instructions, palettes, shapes, site names, ...). Cached: treat it as read-only."""
    return json.loads(VOCAB_PATH.read_text(encoding="utf-8"))


def is_held_out(word: str) -> bool:
    """Whether `word` belongs to the held-out ("test") part of the word list."""
    return zlib.crc32(word.encode("utf-8")) % HELD_OUT_MODULUS == 0


class WordBank:
    """Words sorted by length, so that a word no longer than a given width can be drawn in O(1).

    Layouts have a fixed number of character columns; picking among the words that fit (rather than drawing and
    rejecting) keeps every sample cheap and every draw a single `rng.randrange` call, hence deterministic.
    """

    def __init__(self, words: list[str]):
        if not words:
            raise ValueError("a WordBank needs at least one word")
        self.words = sorted(set(words), key=lambda w: (len(w), w))
        self._lengths = [len(w) for w in self.words]
        self.min_len = self._lengths[0]

    def __len__(self) -> int:
        return len(self.words)

    def pick(self, rng: random.Random, max_len: int) -> str:
        """A uniformly drawn word of at most `max_len` characters."""
        count = bisect_right(self._lengths, max_len)
        if count == 0:
            raise ValueError(f"no word of at most {max_len} characters (shortest has {self.min_len})")
        return self.words[rng.randrange(count)]

    def pick_phrase(self, rng: random.Random, n_words: int, max_chars: int) -> list[str]:
        """`n_words` words that fit on one line of `max_chars` characters when joined by single spaces."""
        picked: list[str] = []
        for i in range(n_words):
            words_left = n_words - i - 1
            # leave room for the words still to come (shortest length plus a space each)
            budget = max_chars - sum(len(w) + 1 for w in picked) - words_left * (self.min_len + 1)
            picked.append(self.pick(rng, budget))
        return picked


MADE_UP_SYMBOLS = string.ascii_lowercase + string.digits


class MadeUpWordBank(WordBank):
    """A WordBank that replaces a share of its picks with random lowercase letters and digits of the same length.

    A word list of a few thousand words is small enough for a model to memorise word shapes whole; a made-up string
    can only be read letter by letter, which is the skill that carries over to held-out words. Digits are in the mix
    because no word list has them and poster dates need them: with letters only, the default model read poster titles
    (0.86) far better than the day numbers under them (0.40).
    """

    def __init__(self, words: list[str], share: float):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the share of made-up words must be between 0 and 1, got {share}")
        super().__init__(words)
        self.share = share

    def pick(self, rng: random.Random, max_len: int) -> str:
        word = super().pick(rng, max_len)
        if rng.random() < self.share:
            return "".join(rng.choice(MADE_UP_SYMBOLS) for _ in word)
        return word


def _split_words(split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"unknown word split {split!r}; expected one of {SPLITS}")
    words = [w.strip() for w in WORDLIST_PATH.read_text(encoding="utf-8").splitlines() if w.strip()]
    if split != "all":
        words = [w for w in words if is_held_out(w) == (split == "test")]
    return words


@lru_cache(maxsize=8)
def word_bank(split: str = "all", made_up_words: float = 0.0) -> WordBank:
    """The vendored English words of one split: "all", "train" (about 90 %) or "test" (held out, about 10 %); with
    `made_up_words` > 0, that share of the words drawn are random strings of letters and digits instead (for
    training)."""
    words = _split_words(split)
    return MadeUpWordBank(words, made_up_words) if made_up_words else WordBank(words)


@lru_cache(maxsize=8)
def vocab_bank(section: str, key: str) -> WordBank:
    """A WordBank over a word list in `vocab.json`, e.g. `vocab_bank("webpage", "links")`."""
    return WordBank(load_vocab()[section][key])
