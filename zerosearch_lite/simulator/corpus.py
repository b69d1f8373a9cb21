"""`CorpusSearchEngine`: BM25 (bm25s) over a JSONL corpus of `{"id", "contents"}` rows — a real engine.

Builds the index once, saves it under `paths.index_dir()` and reloads it on the next construction.
Must not modify the corpus file, and must not use the question or gold answers (`mode` and `context`
are ignored).

Rows: `contents` is `"Title"\ntext` (FlashRAG / Search-R1). Broken rows (not UTF-8, bad JSON, no
`contents`) are skipped and counted, the first few kept with their line numbers in `warnings`, because
one bad line in a million-row dump should not stop a run; a file with no usable row, or one that cannot
be opened, is a `ZslError` naming the file. Documents that share no term with the query are never
returned (as with Lucene's BM25 in Search-R1), so a query can get fewer than k documents; an empty
query gets none. Tokens: bm25s' tokenizer with English stopwords, stemmed when PyStemmer is importable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import ZslError
from .contents import Passage
from .engine import PassageEngine

INDEX_FORMAT = 1  # bump when tokenization or the saved layout changes: old indexes are then rebuilt
META_FILE = "zsl_index.json"
MAX_REASONS = 5
EXPECTED_ROWS = 'expected JSONL rows of {"id", "contents"}'


@dataclass
class CorpusFile:
    """The usable rows of a corpus file, and what was skipped on the way."""

    path: Path
    ids: list[str] = field(default_factory=list)
    contents: list[str] = field(default_factory=list)
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)
    digest: str = ""  # blake2b of the file's bytes as read: what an index of it is keyed by

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)


def read_corpus(path: str | Path) -> CorpusFile:
    path = Path(path)
    if not path.exists():
        raise ZslError(f"corpus not found: {path}")
    if not path.is_file():
        raise ZslError(f"corpus is not a file: {path}")
    corpus = CorpusFile(path)
    content = hashlib.blake2b(digest_size=16)
    try:
        # Binary lines, decoded one by one: a stray non-UTF-8 byte costs one row, not the file.
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):
                content.update(raw)
                _read_row(corpus, number, raw)
    except OSError as exc:
        raise ZslError(f"cannot read corpus {path}: {exc.strerror or exc}") from None
    corpus.digest = content.hexdigest()
    if not corpus.contents:
        if not corpus.skipped:
            raise ZslError(f"corpus {path} is empty ({EXPECTED_ROWS})")
        raise ZslError(f"no usable rows in corpus {path}: {'; '.join(corpus.reasons)} ({EXPECTED_ROWS})")
    return corpus


def _read_row(corpus: CorpusFile, number: int, raw: bytes) -> None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        corpus.skip(f"line {number}: not UTF-8 text")
        return
    if number == 1:
        line = line.lstrip("\ufeff")  # a byte-order mark from Windows editors is not an error
    if not line.strip():
        return
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        corpus.skip(f"line {number}: invalid JSON ({exc.msg})")
        return
    if not isinstance(row, dict):
        corpus.skip(f"line {number}: not a JSON object")
        return
    contents = row.get("contents")
    if not isinstance(contents, str) or not contents.strip():
        corpus.skip(f'line {number}: no "contents" text')
        return
    row_id = row.get("id")
    corpus.ids.append(str(row_id) if isinstance(row_id, str | int) and str(row_id) else f"line-{number}")
    corpus.contents.append(contents)


def _english_stemmer() -> tuple[str, Any]:
    """PyStemmer is optional: a better index where installed, never a requirement."""
    try:
        import Stemmer
    except ImportError:
        return "none", None
    return "snowball-english", Stemmer.Stemmer("english")


def corpus_fingerprint(corpus: CorpusFile, *index_params: object) -> str:
    """A short key for an index of this corpus file built with `index_params` (tokenizer, model...).

    Keyed by the content hash taken while the file was read (no second pass), never by size and mtime:
    a same-size edit that keeps the mtime (`cp -p`, `rsync -a`) must not reuse a stale index. The path
    keeps two same-named corpora apart."""
    key = "|".join(map(str, (corpus.path.resolve(), corpus.digest, *index_params)))
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def default_index_path(corpus_path: Path, kind: str, fingerprint: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", corpus_path.stem)[:60] or "corpus"
    return paths.index_dir() / f"{slug}{kind}-{fingerprint}"


def save_index_atomically(target: Path, write: Callable[[Path], None], meta: dict[str, Any],
                          *, ours: Sequence[str] = (META_FILE,)) -> None:
    """`write(folder)` fills a fresh folder beside `target`, which then replaces `target` by a rename.

    A crash mid-save never leaves a half index that loads. `target` is replaced only when it is one of
    ours (a file named in `ours` in it) or empty: never a user's folder."""
    if target.exists() and not target.is_dir():
        raise ZslError(f"index folder {target} is a file")
    is_ours = any((target / name).is_file() for name in ours)
    if target.is_dir() and any(target.iterdir()) and not is_ours:
        raise ZslError(f"index folder {target} holds other files; give an empty or new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        write(staging)
        (staging / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        publish_folder(staging, target)  # a stale index of ours (checked above), never a user's folder
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: Path, target: Path) -> None:
    """Rename the finished folder `staging` to `target`. An old `target` is first renamed aside, then
    deleted: never deleted in place, where another process would find half a folder."""
    for _ in range(3):
        old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):  # none, or another process moved it meanwhile
            os.replace(target, old)
        try:
            os.replace(staging, target)
            return
        except OSError as exc:  # another process published its own in between: move that aside too
            if not target.is_dir():
                raise exc from None
        finally:
            shutil.rmtree(old, ignore_errors=True)
    os.replace(staging, target)


@contextlib.contextmanager
def exclusive_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive lock on `.<name>.lock` beside `target` for the block, waiting while another
    process holds it (a build of the same index); the kernel releases it if the process dies. Raises
    `OSError` where the folder cannot be written (no lock is needed there: nothing will be saved)."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_index_meta(index_path: Path) -> dict[str, Any] | None:
    """The saved index's metadata, or None when there is none or it is unreadable."""
    try:
        meta = json.loads((index_path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


class CorpusSearchEngine(PassageEngine):
    name = "corpus"

    def __init__(self, corpus_path: str | Path, *, index_dir: str | Path | None = None):
        self.corpus = read_corpus(corpus_path)
        self.path = self.corpus.path
        self.stemmer_name, self._stemmer = _english_stemmer()
        self.fingerprint = corpus_fingerprint(self.corpus, self.stemmer_name, INDEX_FORMAT)
        self.index_path = Path(index_dir or default_index_path(self.path, "", self.fingerprint))
        self.warnings: list[str] = []
        if self.corpus.skipped:
            first = "; ".join(self.corpus.reasons)
            self.warnings.append(f"skipped {self.corpus.skipped} broken rows of {self.path} (first: {first})")
        self.loaded_from_disk = False
        self.retriever = self._load_or_build()

    def _load_or_build(self):
        """The saved index, else one built and saved under the index's lock (a process that waited for
        it loads what the other one saved). Where no lock can be made, nothing can be saved either."""
        retriever = self._load()
        with contextlib.ExitStack() as stack:
            if retriever is None:
                with contextlib.suppress(OSError):
                    stack.enter_context(exclusive_lock(self.index_path))
                    retriever = self._load()
            if retriever is None:
                return self._build()
        self.loaded_from_disk = True
        return retriever

    @property
    def doc_count(self) -> int:
        return len(self.corpus.contents)

    @property
    def skipped(self) -> int:
        return self.corpus.skipped

    def _meta(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "fingerprint": self.fingerprint,
            "doc_count": self.doc_count,
            "stemmer": self.stemmer_name,
            "corpus": str(self.path.resolve()),
        }

    def _tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(
            list(texts), stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )

    def _load(self):
        """The saved index if it was built from this very file with this tokenizer, else None."""
        import bm25s

        if read_index_meta(self.index_path) != self._meta():
            return None
        try:
            retriever = bm25s.BM25.load(str(self.index_path))
        except Exception:  # noqa: BLE001 - a damaged saved index is rebuilt, never fatal
            return None
        if int(retriever.scores.get("num_docs", -1)) != self.doc_count:
            return None
        return retriever

    def _build(self):
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(self._tokenize(self.corpus.contents), show_progress=False)
        try:
            self._save(retriever)
        except OSError as exc:
            # A read-only home still gets a working engine; it just rebuilds next time.
            self.warnings.append(f"could not save the BM25 index to {self.index_path}: {exc.strerror or exc}")
        return retriever

    def _save(self, retriever) -> None:
        save_index_atomically(
            self.index_path, lambda folder: retriever.save(str(folder)), self._meta(),
            ours=(META_FILE, "params.index.json"),
        )

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Passage]]:
        """Passages with ids and BM25 scores per query, best first (the server returns these)."""
        found: list[list[Passage]] = [[] for _ in queries]
        k = min(k, self.doc_count)
        if k < 1 or not queries:
            return found
        vocab = self.retriever.vocab_dict
        # Keep only indexed terms: bm25s fails on a query with none (all stopwords, or unseen words).
        live = [(i, [t for t in tokens if t in vocab]) for i, tokens in enumerate(self._tokenize(queries))]
        live = [(i, tokens) for i, tokens in live if tokens]
        if not live:
            return found
        rows, scores = self.retriever.retrieve(
            [tokens for _, tokens in live], k=k, show_progress=False, n_threads=0
        )
        for (i, _), doc_rows, doc_scores in zip(live, rows, scores, strict=True):
            found[i] = [
                Passage(self.corpus.ids[row], self.corpus.contents[row], float(score))
                for row, score in zip(doc_rows.tolist(), doc_scores.tolist(), strict=True)
                if score > 0
            ]
        return found

    def warnings_for(self, query: str, hits: list[Passage], k: int) -> list[str]:
        if query.strip() and not hits and k > 0:
            return ["no query word is in the index (only stopwords or unseen words)"]
        return super().warnings_for(query, hits, k)

