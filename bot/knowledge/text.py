"""Text as retrieval reads it: queries normalised like the NLU's, and words (jieba's, for Chinese)."""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Any

# The library's own terms (续借, 馆际互借, ...), which jieba's general dictionary splits; the NLU's
# tokenizer reads the same folder.
DICTIONARY = Path(__file__).resolve().parents[2] / "nlu" / "dictionary"
_WORDLIKE = re.compile(r"\w")


@functools.cache
def _segmenter() -> Any:
    """A jieba segmenter of its own (the global one is left alone) that knows the library's terms."""
    with warnings.catch_warnings():  # jieba 0.42 imports the deprecated pkg_resources
        warnings.simplefilter("ignore", UserWarning)
        import jieba

    jieba.setLogLevel(logging.WARNING)
    segmenter = jieba.Tokenizer()
    for path in sorted(DICTIONARY.glob("*.txt")):
        segmenter.load_userdict(str(path))
    return segmenter


def words(text: str) -> list[str]:
    """The words of a text: jieba's for Chinese, runs of letters and digits for Latin script."""
    return [word for word in _segmenter().lcut(text) if _WORDLIKE.search(word)]


_SPACES = re.compile(r"\s+")


def normalise_query(text: str) -> str:
    """A query or entry text as the retriever reads it (and as the NLU does): NFKC, so that full-width
    letters, digits and punctuation from a Chinese input method read as their usual forms; lower case;
    single spaces."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()
