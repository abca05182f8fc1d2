"""Text cut into pieces a speech model can take in one go.

Piper (VITS) synthesizes a sentence at a time, and its memory grows with the square of a
sentence's length: a 4.8 KB lead name with no full stop in it took 11.6 GB and 110 CPU-seconds
as one "sentence". Text is spoken in pieces of at most MAX_PIECE_CHARS, cut at sentence ends
where possible, then at commas, then at spaces, and only as a last resort inside a word. Lines
shorter than that (every line a campaign normally says) are one piece, spoken as before.
"""

from __future__ import annotations

import re

MAX_PIECE_CHARS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?।॥])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def speech_pieces(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """`text` as pieces of at most `max_chars`, whole sentences packed together while they fit."""
    if len(text) <= max_chars:
        return [text] if text.strip() else []
    text = " ".join(text.split())
    pieces: list[str] = []
    for part in _split(text, max_chars, (_SENTENCE_END, _CLAUSE_END)):
        if pieces and len(pieces[-1]) + 1 + len(part) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {part}"
        else:
            pieces.append(part)
    return pieces


def _split(text: str, max_chars: int, rules: tuple[re.Pattern[str], ...]) -> list[str]:
    """Cut by the first rule, then cut what is still too long by the next (spaces, then hard)."""
    if len(text) <= max_chars:
        return [text]
    if rules:
        parts = [p for p in rules[0].split(text) if p]
        if len(parts) > 1:
            return [piece for part in parts for piece in _split(part, max_chars, rules)]
        return _split(text, max_chars, rules[1:])
    words, pieces, current = text.split(" "), [], ""
    for word in words:
        while len(word) > max_chars:  # a "word" longer than a piece: cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces
