"""The semantic document cache: exact hits first, near-identical queries reuse documents only under the
same model, prompt, mode, k and context, hits counted apart, vectors kept, and fewer simulator calls."""

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from minilm import converted_minilm

from zerosearch_lite.models.backends.fake import FakeBackend
from zerosearch_lite.simulator.cache import PK, CacheKey, DocumentCache
from zerosearch_lite.simulator.embeddings import EmbeddingOptions, OnnxEmbedder
from zerosearch_lite.simulator.factory import open_document_cache
from zerosearch_lite.simulator.semantic_cache import SemanticDocumentCache
from zerosearch_lite.simulator.simulated import SimulatedSearchEngine
from zerosearch_lite.simulator.types import Doc, SearchContext

DOCS = [Doc("Ed Wood", "Ed Wood was an American filmmaker.", "simulated:useful")]
TEXT = "Doc 1: (A) alpha beta gamma\nDoc 2: (B) delta epsilon zeta"


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return OnnxEmbedder(EmbeddingOptions(model=str(converted_minilm(tmp_path_factory))))


def key(query, **changes):
    fields = {"model_id": "sim", "prompt_version": "v1", "mode": "useful", "query": query, "k": 5, "context": ""}
    return CacheKey(**(fields | changes))


def test_exact_hits_come_first_and_are_counted_apart(tmp_path, embedder, monkeypatch):
    cache = SemanticDocumentCache(DocumentCache(tmp_path / "c.db"), embedder, threshold=0.9)
    cache.put(key("scott derrickson nationality"), DOCS)
    monkeypatch.setattr(cache, "_group", lambda key: pytest.fail("an exact hit must not look further"))
    assert cache.get(key("scott derrickson nationality")) == DOCS
    monkeypatch.undo()
    assert cache.get(key("scott derrickson's nationality")) == DOCS
    assert cache.get(key("capital of germany")) is None
    assert cache.stats() | {"rows": 1} == cache.stats()
    assert (cache.stats()["exact_hits"], cache.stats()["semantic_hits"], cache.misses) == (1, 1, 1)
    assert cache.hit_rate == pytest.approx(2 / 3)
    assert cache.matches[-1][:2] == ("scott derrickson's nationality", "scott derrickson nationality")


def test_a_near_identical_query_needs_the_same_model_prompt_mode_k_and_context(tmp_path, embedder):
    cache = SemanticDocumentCache(DocumentCache(tmp_path / "c.db"), embedder, threshold=0.9)
    cache.put(key("kiss and tell 1945 film"), DOCS)
    assert cache.get(key("kiss and tell film 1945")) == DOCS
    for change in ({"model_id": "other"}, {"prompt_version": "v2"}, {"mode": "noisy"}, {"k": 3},
                   {"context": "abc"}):
        assert cache.get(key("kiss and tell film 1945", **change)) is None, change
    assert cache.semantic_hits == 1


def test_the_threshold_decides(tmp_path, embedder):
    strict = SemanticDocumentCache(DocumentCache(tmp_path / "a.db"), embedder, threshold=0.99)
    loose = SemanticDocumentCache(DocumentCache(tmp_path / "b.db"), embedder, threshold=0.8)
    for cache in (strict, loose):
        cache.put(key("who directed ed wood"), DOCS)
    assert strict.get(key("ed wood director")) is None  # cosine 0.87 with all-MiniLM-L6-v2
    assert loose.get(key("ed wood director")) == DOCS


def test_query_vectors_are_stored_and_a_reopened_cache_embeds_nothing(tmp_path, embedder, monkeypatch):
    first = SemanticDocumentCache(DocumentCache(tmp_path / "c.db"), embedder, threshold=0.9)
    first.put(key("scott derrickson nationality"), DOCS)
    first.get(key("scott derrickson's nationality"))
    first.close()
    calls = []
    original = embedder.encode_queries
    monkeypatch.setattr(embedder, "encode_queries", lambda texts, **kw: calls.append(list(texts)) or original(texts))
    reopened = open_document_cache(tmp_path / "c.db", kind="semantic", embedding_model=str(embedder.files.onnx_path.parent))
    reopened.embedder = embedder
    assert reopened.get(key("scott derrickson's nationality")) == DOCS
    assert calls == []


def test_the_simulated_engine_calls_the_simulator_less_with_the_semantic_cache(tmp_path, embedder):
    context = SearchContext("Were Scott Derrickson and Ed Wood of the same nationality?", ("yes",))
    batches = [["Scott Derrickson nationality", "scott derrickson's nationality", "Ed Wood nationality"],
               ["What nationality is Scott Derrickson?", "ed wood's nationality", "Scott Derrickson nationality"]]
    calls = {}
    for kind, cache in (("exact", DocumentCache(tmp_path / "e.db")),
                        ("semantic", SemanticDocumentCache(DocumentCache(tmp_path / "s.db"), embedder, 0.9))):
        backend = FakeBackend(default=TEXT)
        engine = SimulatedSearchEngine(backend, cache=cache, structured=False)
        results = [engine.lookup(batch, 2, context=context) for batch in batches]
        calls[kind] = len(backend.history)
        assert all(len(r.docs) == 2 for batch in results for r in batch)
        if kind == "semantic":
            # Within one batch the near-duplicate shares the lead's generation; the next batch hits.
            assert results[0][1].docs == results[0][0].docs and results[1][0].cache_hit
            assert cache.stats()["semantic_hits"] == 3 and cache.stats()["exact_hits"] == 1
    assert calls == {"exact": 5, "semantic": 2}


def test_open_document_cache_refuses_an_unknown_kind(tmp_path):
    from zerosearch_lite.errors import ZslError

    with pytest.raises(ZslError, match="unknown cache 'fuzzy'"):
        open_document_cache(tmp_path / "c.db", kind="fuzzy")
    assert isinstance(open_document_cache(tmp_path / "c.db"), DocumentCache)


class HashEmbedder:
    """Deterministic unit vectors, one per multiset of characters (anagrams are near-duplicates): the
    cache's SQL and bookkeeping, not the model, are under test here."""

    model_id = "hash"

    def encode_queries(self, texts):
        seeds = [int(hashlib.sha1("".join(sorted(text)).encode()).hexdigest()[:8], 16) for text in texts]
        rows = [np.random.default_rng(seed).standard_normal(8) for seed in seeds]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 8)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_group_larger_than_sqlites_variable_limit_is_read_in_chunks(tmp_path):
    exact = DocumentCache(tmp_path / "c.db")
    exact.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # SQLite's default before 3.32
    row = {"docs": json.dumps([DOCS[0].to_dict()]), "hits": 0, "created_at": "", "last_hit_at": ""}
    exact.table.insert_all([key(f"cached query {i}").as_row() | row for i in range(2000)], pk=PK)
    cache = SemanticDocumentCache(exact, HashEmbedder(), threshold=0.99)
    assert cache.get(key("cached query 9991")) == DOCS  # no exact row: the whole group is compared
    assert len(cache._group(key("x")).queries) == 2000 and cache.semantic_hits == 1
    reopened = SemanticDocumentCache(DocumentCache(tmp_path / "c.db"), HashEmbedder(), threshold=0.99)
    reopened.db.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    assert reopened.get(key("cached query 4321")) == DOCS  # vectors read back from the table, in chunks


def test_batch_key_keeps_only_the_latest_matches(tmp_path):
    cache = SemanticDocumentCache(DocumentCache(tmp_path / "c.db"), HashEmbedder(), threshold=0.5)
    for i in range(150):
        lead = key(f"lead {i}")
        assert cache.batch_key(key(f"{i} lead"), [lead]) == lead  # same characters: the same vector
    assert len(cache.matches) == 100 and cache.matches[-1][1] == "lead 149"
