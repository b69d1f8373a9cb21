"""Retrieval speed: passages/s to build each index, ms per query at batch 1 and 32 for BM25, dense and
hybrid, and the ONNX Runtime encoder against the same model in torch (passages/s and their ratio).

    python bench/retrieval_speed.py [--passages 1521] [--queries 64] [--embedding-model embedded]

Indexes are built from scratch in a temporary $ZSL_HOME index folder (the ONNX conversion is reused when
ZSL_HOME is set). Torch is imported only for the comparison row.
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


def per_query_ms(engine, queries: list[str], batch: int) -> float:
    engine.lookup(queries[:batch], 5)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        engine.lookup(queries[start:start + batch], 5)
    return (time.perf_counter() - started) / len(queries) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=None, help="first N passages of the corpus (default all)")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--embedding-model", default="embedded")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    os.environ.setdefault("ZSL_HOME", tempfile.mkdtemp(prefix="zsl-bench-"))

    from zerosearch_lite.simulator.contents import split_contents
    from zerosearch_lite.simulator.corpus import CorpusSearchEngine
    from zerosearch_lite.simulator.dense import DenseSearchEngine
    from zerosearch_lite.simulator.embeddings import EmbeddingOptions, OnnxEmbedder
    from zerosearch_lite.simulator.hybrid import HybridOptions, HybridSearchEngine

    work = Path(tempfile.mkdtemp(prefix="zsl-speed-"))
    corpus = work / "corpus.jsonl"
    lines = (args.data_dir / "wiki_sample_corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    corpus.write_text("".join(lines[:args.passages]), encoding="utf-8")
    with (args.data_dir / "hotpot_dev_sample.jsonl").open(encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle]
    queries = (questions * (args.queries // len(questions) + 1))[:args.queries]
    embedder = OnnxEmbedder(EmbeddingOptions(model=args.embedding_model))
    count = len(lines[:args.passages])

    table = Table(title=f"{count} passages, {len(queries)} queries, {embedder.model_id}, "
                        f"{embedder.providers[0]}, {os.environ.get('ZSL_THREADS', 'all')} threads")
    for column in ("engine", "index passages/s", "ms/query (batch 1)", "ms/query (batch 32)"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    started = time.perf_counter()
    bm25 = CorpusSearchEngine(corpus, index_dir=work / "bm25")
    bm25_rate = count / (time.perf_counter() - started)
    started = time.perf_counter()
    dense = DenseSearchEngine(corpus, embedder=embedder, index_dir=work / "dense")
    dense_rate = count / (time.perf_counter() - started)
    hybrid = HybridSearchEngine.__new__(HybridSearchEngine)  # the two indexes above, fused: no third build
    hybrid.bm25, hybrid.dense, hybrid.options = bm25, dense, HybridOptions()
    for name, engine, rate in (("bm25", bm25, f"{bm25_rate:,.0f}"), ("dense", dense, f"{dense_rate:,.1f}"),
                               ("hybrid", hybrid, "(both)")):
        table.add_row(name, rate, f"{per_query_ms(engine, queries, 1):.2f}", f"{per_query_ms(engine, queries, 32):.2f}")
    Console().print(table)

    texts = [" ".join(split_contents(json.loads(line)["contents"])) for line in lines[:min(count, 256)]]
    started = time.perf_counter()
    embedder.encode_passages(texts)
    onnx_rate = len(texts) / (time.perf_counter() - started)
    torch_rate = torch_passages_per_second(embedder, texts)
    ratio = Table(title=f"encoder, {len(texts)} passages, batch {embedder.options.batch_size}, max {embedder.max_length} tokens")
    for column in ("runtime", "passages/s", "vs torch"):
        ratio.add_column(column, justify="left" if column == "runtime" else "right")
    ratio.add_row("onnxruntime", f"{onnx_rate:.1f}", f"{onnx_rate / torch_rate:.2f}x")
    ratio.add_row("torch (same model, fp32)", f"{torch_rate:.1f}", "1.00x")
    Console().print(ratio)


def torch_passages_per_second(embedder, texts: list[str]) -> float:
    import json as json_module

    import torch

    from zerosearch_lite.simulator import onnx_export

    record = json_module.loads((embedder.files.onnx_path.parent / "zsl_embedding.json").read_text())
    source = Path(record["source"])
    model = onnx_export._load_torch_model(source)
    torch.set_num_threads(int(os.environ.get("ZSL_THREADS", os.cpu_count() or 1)))
    batch_size = embedder.options.batch_size
    order = sorted(texts, key=len)  # the same length-sorted batching the ONNX path uses
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        batch = onnx_export._batch(source, order[start:start + batch_size], embedder.max_length)
        onnx_export.torch_embeddings(model, batch, embedder.pooling)
    return len(texts) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
