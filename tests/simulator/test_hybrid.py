"""Reciprocal rank fusion on hand-made rankings, and the hybrid engine over BM25 + dense."""

import pytest
from conftest import DATA
from minilm import converted_minilm, fast_options

from zerosearch_lite.simulator.embeddings import OnnxEmbedder
from zerosearch_lite.simulator.hybrid import HybridOptions, HybridSearchEngine, reciprocal_rank_fusion


def test_rrf_sums_reciprocal_ranks_on_a_hand_made_case():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], constant=60)
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    assert dict(fused) == pytest.approx(expected)


def test_rrf_ties_keep_first_seen_order_and_the_constant_matters():
    assert [item for item, _ in reciprocal_rank_fusion([["x", "y"], ["y", "x"]])] == ["x", "y"]
    # A first place in one list beats a fourth place in both only when the constant is small (c < 2).
    rankings = [["solo", "a", "b", "both"], ["other", "c", "d", "both"]]
    assert reciprocal_rank_fusion(rankings, constant=1)[0][0] == "solo"
    assert reciprocal_rank_fusion(rankings, constant=60)[0][0] == "both"
    assert reciprocal_rank_fusion([]) == [] and reciprocal_rank_fusion([[], []]) == []


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hybrid")
    corpus = folder / "corpus.jsonl"
    with (DATA / "corpus_small.jsonl").open(encoding="utf-8") as handle:
        corpus.write_text("".join(line for _, line in zip(range(24), handle, strict=False)), encoding="utf-8")
    embedder = OnnxEmbedder(fast_options(converted_minilm(tmp_path_factory)))
    return HybridSearchEngine(corpus, embedder=embedder)


def test_hybrid_fuses_the_heads_of_bm25_and_dense(hybrid):
    query = "an American horror movie director"  # dense's find; BM25 matches other words
    lexical = [p.id for p in hybrid.bm25.retrieve([query], 3)[0]]
    semantic = [p.id for p in hybrid.dense.retrieve([query], 3)[0]]
    fused = hybrid.retrieve([query], 3)[0]
    expected = [key[0] for key, _ in reciprocal_rank_fusion(
        [[(p, None) for p in lexical], [(p, None) for p in semantic]])][:3]
    assert [p.id for p in fused] == expected and semantic[0] in expected
    scores = [p.score for p in fused]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 2 / 61


def test_hybrid_results_carry_their_source_and_empty_queries_get_none(hybrid):
    result, empty = hybrid.lookup(["Scott Derrickson", ""], 5, mode="noisy")
    assert len(result.docs) == 5 and {d.source for d in result.docs} == {"hybrid"}
    assert result.docs[0].title == "Scott Derrickson" and result.mode is None
    assert empty.docs == [] and empty.warnings == ["empty query"]
    assert hybrid.lookup(["Ed Wood"], 0)[0].docs == []


def test_more_candidates_change_the_fusion(hybrid):
    deep = HybridSearchEngine.__new__(HybridSearchEngine)
    deep.bm25, deep.dense, deep.options = hybrid.bm25, hybrid.dense, HybridOptions(candidates=24)
    query = "Were Scott Derrickson and Ed Wood of the same nationality?"
    assert len(deep.retrieve([query], 5)[0]) == 5
    shallow_ids = {p.id for p in hybrid.retrieve([query], 5)[0]}
    heads = {p.id for p in hybrid.bm25.retrieve([query], 5)[0]} | {p.id for p in hybrid.dense.retrieve([query], 5)[0]}
    assert shallow_ids <= heads  # with candidates = k, fused results come only from the two heads
