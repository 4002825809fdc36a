"""Text analysis for keyword search: tokenise, lower-case, drop stop words, stem.

Every backend that ranks by words runs the same :class:`Analyzer` over stored text and over the
query, so a query word and a stored word meet only as the same stem.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

import Stemmer  # PyStemmer: the Snowball stemmers compiled from C

__all__ = ["Analyzer", "ENGLISH_STOP_WORDS", "words"]

#: English stop words: the Snowball project's English stop list
#: (https://snowballstem.org/algorithms/english/stop.txt, as also shipped by NLTK), plus the
#: contraction stems NLTK adds (``don``, ``ll``, ``ve`` ...). Question words such as "what",
#: "when" and "did" are on it: on LoCoMo, dropping them raised evidence recall@10 of BM25 from
#: 0.556 (Lucene's 33-word list) to 0.606 (this list), see docs/in-memory-backend.md.
ENGLISH_STOP_WORDS: frozenset[str] = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his himself
    she her hers herself it its itself they them their theirs themselves what which who whom
    this that these those am is are was were be been being have has had having do does did
    doing would should could ought i'm you're he's she's it's we're they're i've you've we've
    they've i'd you'd he'd she'd we'd they'd i'll you'll he'll she'll we'll they'll isn't
    aren't wasn't weren't hasn't haven't hadn't doesn't don't didn't won't wouldn't shan't
    shouldn't can't cannot couldn't mustn't let's that's who's what's here's there's when's
    where's why's how's a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on off
    over under again further then once here there when where why how all any both each few more
    most other some such no nor not only own same so than too very s t can will just don should
    now d ll m o re ve y
    """.split()
)

# Words of letters/digits, keeping inner apostrophes ("i'm", "caroline's") so contractions meet
# the stop list whole and possessives reach the stemmer, which strips "'s".
#: Words whose stem is remembered; the cache is emptied when it grows past this.
_STEM_CACHE_SIZE = 500_000

_TOKEN = re.compile(r"\w+(?:['’]\w+)*")
#: For ASCII text: lower-case letters, keep ``[a-z0-9_']``, every other byte becomes a space
#: (``\w`` on ASCII is ``[A-Za-z0-9_]``).
_ASCII_WORD_BYTES = bytes(
    c if chr(c).isalnum() or chr(c) in "_'" else 32 for c in range(128)
).lower() + bytes([32]) * 128


class Analyzer:
    """Turns text into index terms.

    Steps: ``casefold()``; split into words (``\\w+`` with inner apostrophes, unicode-aware;
    a right single quote counts as an apostrophe); drop stop words; stem each word with the
    Snowball stemmer of ``language`` (PyStemmer; English is Porter2).

    Args:
        language: A Snowball algorithm name accepted by PyStemmer (``"english"``, ``"german"``...).
        stop_words: Words (case-folded) that are never indexed or searched.
        stem: ``False`` keeps words unstemmed.

    Raises:
        KeyError: PyStemmer has no algorithm named ``language``.
    """

    def __init__(
        self,
        *,
        language: str = "english",
        stop_words: Iterable[str] = ENGLISH_STOP_WORDS,
        stem: bool = True,
    ) -> None:
        self.language = language
        self.stop_words = frozenset(stop_words)
        # PyStemmer's own cache is off. Ours maps each word seen to its interned stem (so every
        # occurrence of a stem in an index is one shared str object) and each stop word to "",
        # so filtering and stemming are one C-level dict lookup a word.
        self._stemmer = Stemmer.Stemmer(language, 0) if stem else None
        self._lookup = _Stems(self._stemmer, self.stop_words)

    def terms(self, text: str) -> list[str]:
        """Index terms of ``text`` in order of appearance, repeats kept (for term frequency).

        Returns an empty list for text with no words or only stop words.
        """
        return list(filter(None, map(self._lookup.__getitem__, words(text))))


class _Stems(dict):
    """Word -> interned stem (stop words -> ``""``); a word not seen before is stemmed on
    lookup (``__missing__``), so a known word costs one C-level dict lookup."""

    __slots__ = ("_stemmer", "_stop_words")

    def __init__(self, stemmer: Stemmer.Stemmer | None, stop_words: frozenset[str]) -> None:
        super().__init__(dict.fromkeys(stop_words, ""))
        self._stemmer = stemmer
        self._stop_words = stop_words

    def __missing__(self, word: str) -> str:
        if len(self) > _STEM_CACHE_SIZE:
            # bounded: a stream of unique tokens cannot grow it without limit
            self.clear()
            self.update(dict.fromkeys(self._stop_words, ""))
        stem = self[word] = sys.intern(self._stemmer.stemWord(word) if self._stemmer is not None else word)
        return stem


def words(text: str) -> list[str]:
    """``text`` case-folded and split into words (``\\w+`` with inner apostrophes, see
    :class:`Analyzer`), in order.

    ASCII text takes a fast path with the same result: one byte-table pass lower-cases it and
    turns every character that is not ``[A-Za-z0-9_']`` into a space, then ``split()``; a word
    with an apostrophe is re-split by the pattern (which drops outer and doubled apostrophes).
    Other text goes through the unicode pattern.
    """
    if not text.isascii():
        return _TOKEN.findall(text.casefold())
    out = text.encode("ascii").translate(_ASCII_WORD_BYTES).decode("ascii").split()
    if "'" in text:
        out = [w for part in out for w in ((part,) if "'" not in part else _TOKEN.findall(part))]
    return out
