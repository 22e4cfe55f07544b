"""Cleaning: unicode normalisation, whitespace, boilerplate. Pure functions, no I/O."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_BOILERPLATE = [
    re.compile(r"^\s*page\s+\d+(\s+of\s+\d+)?\s*$", re.IGNORECASE),
    re.compile(r"^\s*\d{1,4}\s*$"),  # a lone page number
    re.compile(r"^\s*(all rights reserved|copyright ©?\s*\d{4}.*|©\s*\d{4}.*)\s*$", re.IGNORECASE),
    re.compile(r"^\s*(skip to (main )?content|back to top|table of contents)\s*$", re.IGNORECASE),
]


def clean_text(text: str, *, repeated_line_min: int = 3) -> str:
    """Normalise ``text`` (NFKC), drop control characters and boilerplate lines, tidy whitespace.

    A short line repeated ``repeated_line_min`` times or more (running headers and footers of
    PDFs and web pages) is boilerplate; markdown structure (headings, lists) is kept.
    """
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    counts = Counter(
        line for line in lines if len(line) <= 80 and not line.startswith("#") and any(c.isalpha() for c in line)
    )
    repeated = {line for line, n in counts.items() if n >= repeated_line_min}
    kept = [
        line
        for line in lines
        if line not in repeated and not any(pattern.match(line) for pattern in _BOILERPLATE)
    ]
    return _BLANK_LINES.sub("\n\n", "\n".join(kept)).strip()
