"""The dense engine: finds passages by meaning, index round trip, damaged index, changed corpus,
resumable build, the ANN path past its size, and one-line refusals."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import DATA
from minilm import converted_minilm, fast_options

from zerosearch_lite import paths
from zerosearch_lite.errors import ZslError
from zerosearch_lite.simulator import dense_index
from zerosearch_lite.simulator.dense import DenseOptions, DenseSearchEngine
from zerosearch_lite.simulator.embeddings import OnnxEmbedder
from zerosearch_lite.simulator.factory import build_engine

ROWS = 24


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return OnnxEmbedder(fast_options(converted_minilm(tmp_path_factory)))


def write_corpus(path):
    with (DATA / "corpus_small.jsonl").open(encoding="utf-8") as handle:
        path.write_text("".join(line for _, line in zip(range(ROWS), handle, strict=False)), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "corpus.jsonl")


@pytest.fixture(scope="module")
def built(tmp_path_factory, embedder):
    folder = tmp_path_factory.mktemp("dense")
    return DenseSearchEngine(write_corpus(folder / "corpus.jsonl"), embedder=embedder, index_dir=folder / "idx")


def titles(engine, query, k=3):
    return [doc.title for doc in engine.lookup([query], k)[0].docs]


def test_dense_finds_passages_by_meaning(built):
    engine = built
    assert titles(engine, "Scott Derrickson")[0] == "Scott Derrickson"
    assert titles(engine, "an American horror movie director")[0] == "Scott Derrickson"  # no shared title word
    result = engine.lookup(["Ed Wood"], 5, mode="noisy")[0]
    assert len(result.docs) == 5 and {doc.source for doc in result.docs} == {"dense"} and result.mode is None


def test_retrieve_gives_ids_and_descending_cosines_and_empty_queries_get_none(built):
    engine = built
    hits = engine.retrieve(["Scott Derrickson", ""], 4)
    assert hits[0][0].id == "hotpot_1" and hits[1] == []
    scores = [hit.score for hit in hits[0]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= scores[0] <= 1.0001
    assert engine.lookup([""], 3)[0].warnings == ["empty query"]
    assert len(engine.retrieve(["anything"], 100)[0]) == ROWS and engine.retrieve(["x"], 0) == [[]]


def test_index_round_trip_loads_without_embedding_again(corpus, embedder, monkeypatch):
    first = DenseSearchEngine(corpus, embedder=embedder)
    assert not first.loaded_from_disk and first.index_path.parent == paths.index_dir()
    saved = np.load(first.index_path / dense_index.VECTORS_FILE)
    assert saved.dtype == np.float16 and saved.shape == (ROWS, 384)

    def fail(*args, **kwargs):
        raise AssertionError("the saved index should have been loaded")

    monkeypatch.setattr(embedder, "encode_passages", fail)
    second = DenseSearchEngine(corpus, embedder=embedder)
    assert second.loaded_from_disk and second.warnings == []
    assert second.retrieve(["Ed Wood film"], 5) == first.retrieve(["Ed Wood film"], 5)


@pytest.mark.parametrize("damage", [b"damaged", b""], ids=["garbage", "empty"])
def test_a_corrupt_index_file_is_rebuilt_with_a_warning(corpus, embedder, damage):
    built = DenseSearchEngine(corpus, embedder=embedder)
    (built.index_path / dense_index.VECTORS_FILE).write_bytes(damage)
    rebuilt = DenseSearchEngine(corpus, embedder=embedder)
    assert not rebuilt.loaded_from_disk and "damaged" in rebuilt.warnings[0]
    assert titles(rebuilt, "Scott Derrickson")[0] == "Scott Derrickson"
    assert DenseSearchEngine(corpus, embedder=embedder).loaded_from_disk


def test_a_wrong_shape_in_the_index_is_rebuilt(corpus, embedder):
    built = DenseSearchEngine(corpus, embedder=embedder)
    np.save(built.index_path / dense_index.VECTORS_FILE, np.zeros((ROWS - 1, 384), dtype=np.float16))
    assert "damaged" in DenseSearchEngine(corpus, embedder=embedder).warnings[0]


def test_a_corpus_changed_after_indexing_is_detected(corpus, embedder):
    DenseSearchEngine(corpus, embedder=embedder)
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "new", "contents": '"Zanzibar"\nAn island off the coast of Tanzania.'}) + "\n")
    changed = DenseSearchEngine(corpus, embedder=embedder)
    assert not changed.loaded_from_disk and changed.doc_count == ROWS + 1
    assert "changed since it was indexed" in changed.warnings[0]
    assert titles(changed, "an island near Tanzania")[0] == "Zanzibar"


def test_a_same_size_edit_with_the_old_mtime_is_detected(corpus, embedder):
    DenseSearchEngine(corpus, embedder=embedder)
    stat = corpus.stat()
    text = corpus.read_text(encoding="utf-8").replace("Derrickson", "Kubrickson")
    assert len(text.encode()) == stat.st_size
    corpus.write_text(text, encoding="utf-8")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as `cp -p` or `rsync -a` leave it
    changed = DenseSearchEngine(corpus, embedder=embedder)
    assert not changed.loaded_from_disk and "changed since it was indexed" in changed.warnings[0]
    fresh = DenseSearchEngine(corpus, embedder=embedder, index_dir=changed.index_path.parent / "fresh")
    assert np.array_equal(changed.index.vectors, fresh.index.vectors)


def test_an_index_of_an_older_format_is_rebuilt_quietly(corpus, embedder):
    built = DenseSearchEngine(corpus, embedder=embedder)
    meta_file = built.index_path / "zsl_index.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(meta | {"format": 1, "fingerprint": "0123456789ab"}))  # a size+mtime key
    again = DenseSearchEngine(corpus, embedder=embedder)
    assert not again.loaded_from_disk and again.warnings == []
    assert again.retrieve(["Ed Wood film"], 3) == built.retrieve(["Ed Wood film"], 3)


def test_an_interrupted_build_resumes_from_its_saved_chunks(corpus, embedder, monkeypatch):
    options = DenseOptions(chunk_passages=8)

    def stop_in_the_second_chunk(done, total):
        if done > 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DenseSearchEngine(corpus, embedder=embedder, options=options, progress=stop_in_the_second_chunk)
    encoded = []
    original = embedder.encode_passages

    def counting(texts, **kwargs):
        encoded.append(len(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(embedder, "encode_passages", counting)
    resumed = DenseSearchEngine(corpus, embedder=embedder, options=options)
    assert encoded == [8] * (ROWS // 8 - 1)  # every chunk but the one saved before the interrupt
    fresh = DenseSearchEngine(corpus, embedder=embedder, index_dir=resumed.index_path.parent / "fresh")
    assert np.array_equal(resumed.index.vectors, fresh.index.vectors)
    assert not list(resumed.index_path.parent.glob(".*partial"))  # chunks dropped once the index is saved


BUILD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from zerosearch_lite.simulator.dense_index import build_index

    meta = {"format": 1, "kind": "dense", "fingerprint": "x", "doc_count": 64, "dim": 4, "ann": None}
    encoded = []

    def encode(texts, report):
        encoded.append(len(texts))
        time.sleep(0.03)
        vectors = np.random.default_rng(len(encoded)).random((len(texts), 4)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    while time.time() < float(sys.argv[2]):  # start together
        time.sleep(0.001)
    index = build_index(Path(sys.argv[1]), meta, [f"t{i}" for i in range(64)], encode, chunk_size=8, use_ann=False)
    print(len(index), len(encoded))
    """
)


def test_concurrent_builds_of_one_index_build_it_once_and_all_succeed(tmp_path):
    start = time.time() + 2.0
    processes = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(tmp_path / "idx"), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err for _, err in outputs]
    counts = sorted(tuple(map(int, out.split())) for out, _ in outputs)
    assert counts == [(64, 0), (64, 0), (64, 0), (64, 8)]  # one process embedded, the others loaded its index
    assert sorted(p.name for p in tmp_path.iterdir()) == [".idx.lock", "idx"]


def test_a_disk_error_while_building_is_a_one_line_warning_and_the_engine_works(corpus, embedder, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(dense_index.np, "save", disk_full)
        engine = DenseSearchEngine(corpus, embedder=embedder)
    assert not engine.loaded_from_disk and len(engine.warnings) == 1
    assert engine.warnings[0] == f"could not save the dense index to {engine.index_path}: No space left on device"
    assert titles(engine, "Scott Derrickson")[0] == "Scott Derrickson"
    assert not DenseSearchEngine(corpus, embedder=embedder).loaded_from_disk  # nothing half-saved loads


def test_past_the_ann_threshold_search_goes_through_usearch(corpus, embedder, tmp_path):
    exact = DenseSearchEngine(corpus, embedder=embedder, index_dir=tmp_path / "exact")
    approximate = DenseSearchEngine(corpus, embedder=embedder, options=DenseOptions(ann_min_passages=10),
                                    index_dir=tmp_path / "ann")
    assert exact.index.ann is None and approximate.index.ann is not None
    assert (tmp_path / "ann" / dense_index.ANN_FILE).is_file()
    queries = ["Scott Derrickson", "Ed Wood film", "a mosque in Istanbul"]
    for ours, theirs in zip(exact.retrieve(queries, 3), approximate.retrieve(queries, 3), strict=True):
        assert [p.id for p in ours] == [p.id for p in theirs]
        assert np.allclose([p.score for p in ours], [p.score for p in theirs], atol=2e-3)
    reloaded = DenseSearchEngine(corpus, embedder=embedder, options=DenseOptions(ann_min_passages=10),
                                 index_dir=tmp_path / "ann")
    assert reloaded.loaded_from_disk and reloaded.index.ann is not None
    (tmp_path / "ann" / dense_index.ANN_FILE).write_bytes(b"broken")
    assert "damaged" in DenseSearchEngine(corpus, embedder=embedder, options=DenseOptions(ann_min_passages=10),
                                          index_dir=tmp_path / "ann").warnings[0]


def test_an_index_folder_holding_other_files_is_refused(corpus, embedder, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ZslError, match="holds other files") as info:
        DenseSearchEngine(corpus, embedder=embedder, index_dir=folder)
    assert (folder / "notes.txt").read_text() == "keep me" and "\n" not in str(info.value)


def test_factory_builds_dense_and_hybrid_and_needs_a_corpus(corpus, tmp_path_factory):
    folder = converted_minilm(tmp_path_factory)
    for kind in ("dense", "hybrid"):
        with pytest.raises(ZslError, match=f"the {kind} engine needs --corpus"):
            build_engine(kind)
    small = corpus.parent / "five.jsonl"
    shutil.copy(corpus, small)
    small.write_text("".join(small.read_text().splitlines(keepends=True)[:5]))
    engine = build_engine("dense", corpus=small, embedding_model=str(folder))
    assert engine.name == "dense" and engine.embedder.model_id.startswith("all-MiniLM-L6-v2@")
    assert build_engine("hybrid", corpus=small, embedding_model=str(folder)).name == "hybrid"
