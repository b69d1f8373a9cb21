"""The saved vectors of a dense index: a float16 matrix built in resumable chunks, searched exactly with
numpy or, past `ann_min_passages`, through a usearch HNSW graph.

Knows nothing about corpora or models beyond the texts and the `encode` function it is given; must not
leave a half-written index that loads (chunks and the final folder are written beside, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ZslError
from .corpus import META_FILE, exclusive_lock, read_index_meta, save_index_atomically

VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.usearch"
PARTIAL_META = "partial.json"
Encode = Callable[[Sequence[str], Callable[[int, int], None] | None], np.ndarray]


class DamagedIndex(Exception):
    """A saved index whose files do not match its metadata (truncated, overwritten, wrong shape)."""


class DenseIndex:
    """Unit vectors of N passages; `search` gives the rows of the k most similar ones by cosine."""

    def __init__(self, vectors: np.ndarray, ann: Any = None):
        self.vectors = vectors  # float16 (N, dim), possibly memory-mapped
        self.ann = ann
        # numpy has no float16 matrix product (it would loop in Python-speed C); float32 uses BLAS.
        self._exact = None if ann is not None else np.asarray(vectors, dtype=np.float32)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosines), each (len(queries), min(k, N)), best first."""
        k = min(k, len(self))
        if k < 1 or len(queries) == 0:
            return np.zeros((len(queries), 0), dtype=np.int64), np.zeros((len(queries), 0), dtype=np.float32)
        if self.ann is not None:
            found = self.ann.search(queries.astype(np.float32), k)
            keys = np.asarray(found.keys, dtype=np.int64).reshape(len(queries), -1)
            distances = np.asarray(found.distances, dtype=np.float32).reshape(len(queries), -1)
            return keys, 1.0 - distances  # usearch's "cos" metric is a distance: 1 - cosine
        scores = queries.astype(np.float32) @ self._exact.T
        if k < scores.shape[1]:
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def load_index(index_path: Path, meta: dict[str, Any]) -> DenseIndex | None:
    """The saved index if its metadata equals `meta`; None if there is none or it is for something else.

    Raises `DamagedIndex` when the metadata matches but the files do not."""
    if read_index_meta(index_path) != meta:
        return None
    try:
        vectors = np.load(index_path / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DamagedIndex(f"{VECTORS_FILE}: {exc}") from None
    if vectors.dtype != np.float16 or vectors.shape != (meta["doc_count"], meta["dim"]):
        raise DamagedIndex(f"{VECTORS_FILE} holds {vectors.dtype} {vectors.shape}")
    ann = None
    if meta.get("ann"):
        ann = _load_ann(index_path / ANN_FILE, meta)
    return DenseIndex(vectors, ann)


def _usearch_index():
    try:
        from usearch.index import Index
    except ImportError:
        raise ZslError(
            "a corpus this large is searched through an HNSW graph: pip install usearch "
            "(or raise ann_min_passages to search it exactly)"
        ) from None
    return Index


def _load_ann(path: Path, meta: dict[str, Any]):
    ann = _usearch_index()(ndim=meta["dim"], metric="cos", dtype="f16")
    try:
        ann.view(str(path))  # memory-mapped: opening a large graph reads nothing up front
    except Exception as exc:  # noqa: BLE001 - usearch raises RuntimeError/ValueError variants
        raise DamagedIndex(f"{ANN_FILE}: {exc}") from None
    if len(ann) != meta["doc_count"]:
        raise DamagedIndex(f"{ANN_FILE} holds {len(ann)} vectors")
    return ann


def build_index(
    index_path: Path,
    meta: dict[str, Any],
    texts: Sequence[str],
    encode: Encode,
    *,
    chunk_size: int,
    use_ann: bool,
    progress: Callable[[int, int], None] | None = None,
    warnings: list[str] | None = None,
) -> DenseIndex:
    """Embed `texts` in chunks saved as they finish (a killed build resumes at the first missing chunk),
    then save the whole index atomically under `index_path` and drop the chunks.

    One process builds an index at a time (an exclusive lock beside it); one that waited for the lock
    loads the index the other just finished. A disk error (read-only folder, disk full) stops the saving,
    not the build: the index is kept in memory and a one-line warning is appended to `warnings`."""
    disk = _Disk(index_path, warnings if warnings is not None else [])
    with disk.lock():
        if disk.usable:
            finished = _finished_index(index_path, meta)
            if finished is not None:
                return finished
        matrix = _embed_in_chunks(index_path, meta, texts, encode, chunk_size, progress, disk)
        ann = _build_ann(matrix) if use_ann else None

        def write(folder: Path) -> None:
            np.save(folder / VECTORS_FILE, matrix)
            if ann is not None:
                ann.save(str(folder / ANN_FILE))

        if disk.attempt(lambda: save_index_atomically(index_path, write, meta, ours=(META_FILE,))):
            shutil.rmtree(_partial_folder(index_path), ignore_errors=True)
        return DenseIndex(matrix, ann)


class _Disk:
    """Where a build saves its work: the first disk error turns saving off, with one warning."""

    def __init__(self, index_path: Path, warnings: list[str]):
        self.index_path = index_path
        self.warnings = warnings
        self.usable = True

    def attempt(self, action: Callable[[], object]) -> bool:
        """Run `action` unless saving is off; an `OSError` turns it off. Whether it ran to the end."""
        if not self.usable:
            return False
        try:
            action()
        except OSError as exc:
            self._turn_off(exc)
            return False
        return True

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The index's build lock, held for the block; where it cannot be made, saving is off."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(self.index_path))
            except OSError as exc:
                self._turn_off(exc)
            yield

    def _turn_off(self, exc: OSError) -> None:
        self.usable = False
        self.warnings.append(f"could not save the dense index to {self.index_path}: {exc.strerror or exc}")


def _finished_index(index_path: Path, meta: dict[str, Any]) -> DenseIndex | None:
    """The index another process finished while this one waited for the lock, if any."""
    try:
        return load_index(index_path, meta)
    except DamagedIndex:
        return None


def _partial_folder(index_path: Path) -> Path:
    return index_path.parent / f".{index_path.name}.partial"


def _embed_in_chunks(index_path, meta, texts, encode, chunk_size, progress, disk: _Disk) -> np.ndarray:
    """All vectors, float16; each chunk read back from a previous build's save, else encoded and saved."""
    partial = _partial_folder(index_path)
    if _read_json(partial / PARTIAL_META) != meta:
        shutil.rmtree(partial, ignore_errors=True)  # chunks of another corpus version or model
    disk.attempt(lambda: _start_partial(partial, meta))
    total = len(texts)
    chunks = []
    for start in range(0, total, chunk_size):
        piece = texts[start:start + chunk_size]
        file = partial / f"chunk-{start:012d}.npy"
        vectors = _read_chunk(file, len(piece), meta["dim"])
        if vectors is None:
            report = None if progress is None else (lambda done, _n, s=start: progress(s + done, total))
            vectors = encode(piece, report).astype(np.float16)
            disk.attempt(lambda file=file, vectors=vectors: _save_chunk(file, vectors))
        elif progress is not None:
            progress(start + len(piece), total)
        chunks.append(vectors)
    return np.concatenate(chunks) if chunks else np.zeros((0, meta["dim"]), dtype=np.float16)


def _start_partial(partial: Path, meta: dict[str, Any]) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    (partial / PARTIAL_META).write_text(json.dumps(meta), encoding="utf-8")


def _save_chunk(file: Path, vectors: np.ndarray) -> None:
    staging = file.with_suffix(".tmp.npy")
    np.save(staging, vectors)
    os.replace(staging, file)


def _build_ann(matrix: np.ndarray):
    ann = _usearch_index()(ndim=matrix.shape[1], metric="cos", dtype="f16")
    ann.add(np.arange(len(matrix), dtype=np.uint64), matrix, threads=os.cpu_count() or 1)
    return ann


def _read_chunk(file: Path, rows: int, dim: int) -> np.ndarray | None:
    try:
        vectors = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return vectors if vectors.shape == (rows, dim) and vectors.dtype == np.float16 else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
