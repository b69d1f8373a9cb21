"""Retrieval quality of BM25, dense and hybrid on the 53 HotpotQA questions over the 1,521-passage
corpus: supporting-title recall@k (share of all supporting titles found in the top k) and answer-in-top-k
(a normalized gold answer occurs in the normalized top-k passages), side by side.

    python bench/retrieval_quality.py [--k 5] [--embedding-model embedded] [--data-dir data]

Indexes are built under $ZSL_HOME (a temporary home unless ZSL_HOME is set).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--embedding-model", default="embedded")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    os.environ.setdefault("ZSL_HOME", tempfile.mkdtemp(prefix="zsl-bench-"))

    from zerosearch_lite.agent.answers import normalize_answer
    from zerosearch_lite.simulator.corpus import CorpusSearchEngine
    from zerosearch_lite.simulator.dense import DenseSearchEngine
    from zerosearch_lite.simulator.embeddings import EmbeddingOptions, OnnxEmbedder
    from zerosearch_lite.simulator.hybrid import HybridSearchEngine

    corpus = args.data_dir / "wiki_sample_corpus.jsonl"
    with (args.data_dir / "hotpot_dev_sample.jsonl").open(encoding="utf-8") as handle:
        questions = [json.loads(line) for line in handle]
    embedder = OnnxEmbedder(EmbeddingOptions(model=args.embedding_model))
    engines = {
        "bm25": lambda: CorpusSearchEngine(corpus),
        "dense": lambda: DenseSearchEngine(corpus, embedder=embedder),
        "hybrid": lambda: HybridSearchEngine(corpus, embedder=embedder),
    }
    table = Table(title=f"{len(questions)} HotpotQA dev questions, {corpus.name}, k={args.k}, "
                        f"embedding {embedder.model_id}")
    for column in ("engine", f"support recall@{args.k}", f"answer in top {args.k}", "both titles",
                   "index s", "ms/query"):
        table.add_column(column, justify="right" if column != "engine" else "left")
    for name, make in engines.items():
        started = time.perf_counter()
        engine = make()
        built = time.perf_counter() - started
        started = time.perf_counter()
        results = engine.lookup([q["question"] for q in questions], args.k)
        per_query = (time.perf_counter() - started) / len(questions) * 1000
        found = both = answered = titles = 0
        for question, result in zip(questions, results, strict=True):
            top_titles = {doc.title for doc in result.docs}
            hits = sum(title in top_titles for title in question["supporting_titles"])
            found += hits
            titles += len(question["supporting_titles"])
            both += hits == len(question["supporting_titles"])
            text = normalize_answer(" ".join(f"{doc.title} {doc.text}" for doc in result.docs))
            answered += any(normalize_answer(a) and normalize_answer(a) in text for a in question["golden_answers"])
        table.add_row(name, f"{found / titles:.3f}", f"{answered / len(questions):.3f}",
                      f"{both / len(questions):.3f}", f"{built:.1f}", f"{per_query:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
