"""Tolerant parsing of simulator output into documents.

Accepts "Doc 1: …" lists, numbered lines, JSON arrays, or plain paragraphs, in that order of preference.
Short or broken output yields fewer documents plus warnings; this module never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

DOC_MARKER = re.compile(r"(?im)^[\s*#>-]*(?:\*\*)?\s*doc(?:ument)?\s*(\d+)\s*(?:\*\*)?\s*[:.)\]-]\s*")
NUMBERED = re.compile(r"(?m)^\s*(?:\[(\d+)\]|(\d+)[.)])\s+")
PAREN_TITLE = re.compile(r"^\(([^()]{1,80})\)\s*[:.-]?\s*(.+)$", re.DOTALL)
COLON_TITLE = re.compile(r"^([^:.!?]{2,60}):\s+(.+)$", re.DOTALL)
QUOTED_TITLE = re.compile(r'^"([^"\n]{1,100})"\s*\n(.+)$', re.DOTALL)
MIN_WORDS = 3


@dataclass
class ParsedDocs:
    docs: list[tuple[str, str]]  # (title, text)
    warnings: list[str] = field(default_factory=list)
    format: str = "none"


def split_title(raw: str) -> tuple[str, str]:
    """Split `(Title) text`, `"Title"\\ntext` or a short `Title: text` prefix from a document. A prefix is a
    title only when the text after it is a document of `MIN_WORDS` words; otherwise the whole is the text."""
    raw = raw.strip()
    split = _prefix_split(raw)
    if split is not None and len(split[1].split()) >= MIN_WORDS:
        return split
    return "", _one_line(raw)


def _prefix_split(raw: str) -> tuple[str, str] | None:
    for pattern in (QUOTED_TITLE, PAREN_TITLE):
        if m := pattern.match(raw):
            return m.group(1).strip(), _one_line(m.group(2))
    if (m := COLON_TITLE.match(raw)) and len(m.group(1).split()) <= 8:
        return m.group(1).strip(" *"), _one_line(m.group(2))
    return None


def _one_line(text: str) -> str:
    return " ".join(text.replace("**", "").split())


def _by_markers(text: str, k: int) -> list[str] | None:
    marks = list(DOC_MARKER.finditer(text))
    if not marks:
        return None
    pieces = []
    for i, m in enumerate(marks):
        if int(m.group(1)) > k:  # the ZeroSearch convention: output is cut at "Doc k+1"
            break
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        pieces.append(text[m.end() : end])
    return pieces


def _by_json(text: str) -> list[str] | None:
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        items = json.loads(text[start : end + 1])
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(items, list):
        return None
    pieces = []
    for item in items:
        if isinstance(item, str):
            pieces.append(item)
        elif isinstance(item, dict):
            body = item.get("text") or item.get("content") or item.get("contents") or item.get("snippet")
            if isinstance(body, str):
                title = item.get("title")
                pieces.append(f"({title}) {body}" if isinstance(title, str) and title else body)
    return pieces or None


def _by_numbers(text: str) -> list[str] | None:
    marks = list(NUMBERED.finditer(text))
    if len(marks) < 2:
        return None
    return [text[m.end() : (marks[i + 1].start() if i + 1 < len(marks) else len(text))] for i, m in enumerate(marks)]


def _by_paragraphs(text: str) -> list[str]:
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    if len(blocks) < 2:
        blocks = [line for line in text.splitlines() if line.strip()]
    return blocks


def parse_documents(text: str, k: int) -> ParsedDocs:
    """Parse up to k documents from raw simulator output."""
    if not isinstance(text, str) or not text.strip():
        return ParsedDocs([], ["the simulator returned empty output"])
    fmt, pieces = "markers", _by_markers(text, k)
    if pieces is None:
        fmt, pieces = "json", _by_json(text)
    if pieces is None:
        fmt, pieces = "numbered", _by_numbers(text)
    if pieces is None:
        fmt, pieces = "paragraphs", _by_paragraphs(text)
    docs, seen = [], set()
    for piece in pieces:
        title, body = split_title(piece)
        if len(body.split()) < MIN_WORDS or body.lower() in seen:
            continue
        seen.add(body.lower())
        docs.append((title, body))
        if len(docs) == k:
            break
    warnings = []
    if fmt != "markers":
        warnings.append(f"no 'Doc N:' markers in simulator output; parsed as {fmt}")
    if len(docs) < k:
        warnings.append(f"the simulator returned {len(docs)} of {k} documents")
    return ParsedDocs(docs, warnings, fmt)
