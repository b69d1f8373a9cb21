"""The dense engine: finds passages by meaning, index round trip, damaged index, changed corpus,
resumable build, the ANN path past its size, and one-line refusals."""

import json
import shutil

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
