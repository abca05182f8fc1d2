"""Roman-script Hinglish, written the way Indians text it, in Devanagari for a Hindi voice.

espeak-ng's Hindi voice reads Devanagari as Hindi, but any word in Latin letters it hands to its
English rules ("main" becomes "mane", "ji" becomes "jai"). Campaigns and the LLM write Hinglish
in Roman script, so before the Hindi voice speaks a line, its Hindi words are transliterated
(indic-transliteration's ITRANS, after the spellings of casual Hinglish: a final "a" is long as
in "kya", a final "i" as in "rahi", a final "n" after a long vowel is nasal as in "hoon") and its
English words stay in Latin letters, where the English rules are right ("site visit",
"budget"). A word counts as English when it is common English (wordfreq's Zipf frequency of
at least 3.8) and not one of the short Hindi words that are also English words ("main", "do").
"""

from __future__ import annotations

import functools
import re

from indic_transliteration import sanscript
from wordfreq import zipf_frequency

ENGLISH_ZIPF = 3.8  # "colleague" 3.98, "booking" 3.86 are English; "aap" 3.47, "hai" 3.57 are not
# Hindi words that English also has: in a Hinglish line they are the Hindi word.
HINDI_HOMOGRAPHS = frozenset(
    "main do sun ya ji to the me hi se par tab na ho bhi pe mat kar log bas jab sab din mil tak "
    "hum tum ab ek is us un in jo ko ki ka ke hai he bol aaj kal chal dekh".split()
)
_LATIN_WORD = re.compile(r"[A-Za-z]+")
_LONG_VOWEL_N = re.compile(r"(aa|ee|ii|oo|uu|ai|au|e|o|i)n$")


def to_devanagari(text: str) -> str:
    """`text` with its Roman-script Hindi words in Devanagari; everything else unchanged."""
    return _LATIN_WORD.sub(lambda match: _word(match.group(0)), text)


@functools.lru_cache(maxsize=4096)
def _word(word: str) -> str:
    lower = word.lower()
    if word.isupper() and len(word) > 1:  # BHK, EMI: spelled out as letters
        return word
    if lower not in HINDI_HOMOGRAPHS and zipf_frequency(lower, "en") >= ENGLISH_ZIPF:
        return word
    return sanscript.transliterate(_itrans_spelling(lower), sanscript.ITRANS, sanscript.DEVANAGARI)


def _itrans_spelling(word: str) -> str:
    """Casual Hinglish spelling -> ITRANS: `kya` -> `kyaa`, `rahi` -> `rahii`, `hoon` -> `hoo.N`."""
    if _LONG_VOWEL_N.search(word) and len(word) > 2:
        word = word[:-1] + ".N"
    word = re.sub(r"(?<=[^aeiou])a$", "aa", word)
    return re.sub(r"(?<=[^aeiou])i$", "ii", word)
