"""Sentence embeddings on ONNX Runtime: the one-time export agrees with torch, is cached and recorded,
a disagreeing export is refused, prefixes follow the model, and query time imports no torch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from minilm import converted_minilm

from zerosearch_lite.errors import ZslError
from zerosearch_lite.simulator import onnx_export
from zerosearch_lite.simulator.contents import split_contents
from zerosearch_lite.simulator.embeddings import (
    SETTINGS_FILE,
    EmbeddingOptions,
    EmbeddingSettings,
    OnnxEmbedder,
    folder_settings,
    resolve_embedding_model,
)


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return converted_minilm(tmp_path_factory)


@pytest.fixture(scope="module")
def embedder(minilm):
    return OnnxEmbedder(EmbeddingOptions(model=str(minilm), batch_size=4))


@pytest.fixture(scope="module")
def passages():
    with (DATA / "corpus_small.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line)["contents"] for _, line in zip(range(12), handle, strict=False)]
    return ["x", "What is the capital of France?"] + [" ".join(split_contents(row)) for row in rows]


def test_onnx_embeddings_agree_with_torch_above_0_999(embedder, passages):
    source = Path(json.loads((embedder.files.onnx_path.parent / SETTINGS_FILE).read_text())["source"])
    model = onnx_export._load_torch_model(source)
    reference = onnx_export.torch_embeddings(model, onnx_export._batch(source, passages, embedder.max_length), "mean")
    # Our path batches 4 at a time, sorted by length, padded per batch: a different padding than torch's.
    ours = embedder.encode(passages)
    cosines = (reference * ours).sum(axis=1)
    assert ours.shape == (len(passages), 384) and cosines.min() > 0.999, cosines
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_export_is_cached_with_its_torch_check(minilm, monkeypatch):
    record = json.loads((minilm / SETTINGS_FILE).read_text())
    assert record["model_id"].startswith("all-MiniLM-L6-v2@") and record["pooling"] == "mean"
    assert record["check"]["min_cosine"] > 0.999 and record["check"]["texts"] == len(onnx_export.CHECK_TEXTS)
    monkeypatch.setenv("ZSL_HOME", str(minilm.parents[2]))  # the home that holds the session's conversion

    def fail(*args, **kwargs):
        raise AssertionError("the cached export should have been used")

    monkeypatch.setattr(onnx_export, "export_checked", fail)
    files = resolve_embedding_model("embedded")
    assert files.onnx_path == minilm / "model.onnx" and files.settings.model_id == record["model_id"]


def test_an_export_that_disagrees_with_torch_is_refused_and_not_cached(minilm, monkeypatch, zsl_home):
    import shutil

    import torch

    def copy_of_a_good_export(module, args, path, **kwargs):
        shutil.copy(minilm / "model.onnx", path)

    monkeypatch.setattr(torch.onnx, "export", copy_of_a_good_export)
    monkeypatch.setattr(onnx_export, "torch_embeddings", lambda model, batch, pooling: np.roll(
        onnx_export.pool(np.random.default_rng(0).standard_normal((len(batch["input_ids"]), 2, 384)),
                         np.ones((len(batch["input_ids"]), 2)), "mean"), 1, axis=0))
    with pytest.raises(ZslError, match="disagrees with torch") as info:
        resolve_embedding_model("embedded")
    assert "\n" not in str(info.value)
    assert not list((zsl_home / "embeddings" / "onnx").glob("*/model.onnx"))  # nothing kept


def test_prefixes_come_from_the_model_and_options_override_them(tmp_path, embedder, minilm):
    e5 = tmp_path / "multilingual-e5-small"
    e5.mkdir()
    assert folder_settings(e5, "intfloat/multilingual-e5-small@abc") == EmbeddingSettings(
        "intfloat/multilingual-e5-small@abc", "mean", 256, "query: ", "passage: ")
    prompted = tmp_path / "prompted"
    prompted.mkdir()
    (prompted / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "Q: ", "document": "D: "}}))
    (prompted / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling", "path": "1_P"}]))
    (prompted / "1_P").mkdir()
    (prompted / "1_P" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert folder_settings(prompted, "p@1") == EmbeddingSettings("p@1", "cls", 256, "Q: ", "D: ")
    assert embedder.query_prefix == "" and embedder.passage_prefix == ""
    prefixed = OnnxEmbedder(EmbeddingOptions(model=str(minilm), query_prefix="query: ", passage_prefix="passage: "))
    assert np.allclose(prefixed.encode_queries(["ed wood"]), embedder.encode(["query: ed wood"]), atol=1e-6)
    assert np.allclose(prefixed.encode_passages(["ed wood"]), embedder.encode(["passage: ed wood"]), atol=1e-6)
    assert not np.allclose(prefixed.encode_queries(["ed wood"]), embedder.encode(["ed wood"]), atol=1e-3)


def test_progress_reports_every_batch(embedder, passages):
    seen = []
    embedder.encode(passages, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 14), (8, 14), (12, 14), (14, 14)]
    assert embedder.encode([]).shape[0] == 0


@pytest.mark.parametrize(
    ("name", "message"),
    [("no-such-model", "unknown embedding model"), ("missing.onnx", "embedding model file not found")],
)
def test_bad_model_names_are_one_line_errors(name, message):
    with pytest.raises(ZslError, match=message) as info:
        OnnxEmbedder(EmbeddingOptions(model=name))
    assert "\n" not in str(info.value)


def test_an_onnx_file_without_tokenizer_or_a_folder_without_model_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not onnx")
    with pytest.raises(ZslError, match="no tokenizer.json beside"):
        OnnxEmbedder(EmbeddingOptions(model=str(tmp_path / "m.onnx")))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ZslError, match="cannot read tokenizer|onnxruntime cannot load"):
        OnnxEmbedder(EmbeddingOptions(model=str(tmp_path / "m.onnx")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ZslError, match="neither a sentence-transformers folder"):
        OnnxEmbedder(EmbeddingOptions(model=str(empty)))


def test_query_time_imports_no_torch(minilm):
    code = (
        "import sys\n"
        "from zerosearch_lite.simulator.embeddings import EmbeddingOptions, OnnxEmbedder\n"
        f"vectors = OnnxEmbedder(EmbeddingOptions(model={str(minilm)!r})).encode_queries(['ed wood'])\n"
        "assert vectors.shape == (1, 384)\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _damaged_copy(minilm: Path, folder: Path) -> Path:
    """A converted model copied elsewhere (tokenizer and recorded settings intact) whose model.onnx broke."""
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", SETTINGS_FILE):
        shutil.copy(minilm / name, folder / name)
    (folder / "model.onnx").write_bytes(b"truncated by a bad copy")
    return folder


def test_a_damaged_converted_copy_outside_the_cache_is_refused_and_left_alone(minilm, tmp_path):
    copy = _damaged_copy(minilm, tmp_path / "my-models" / "minilm-onnx")
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(ZslError, match="model.onnx") as info:
        OnnxEmbedder(EmbeddingOptions(model=str(copy)))
    assert "\n" not in str(info.value) and str(copy / "model.onnx") in str(info.value)
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        ["model.onnx", "notes.txt", "tokenizer.json", SETTINGS_FILE])


def test_a_damaged_export_in_the_conversion_cache_is_converted_again(minilm, monkeypatch, zsl_home):
    def copy_of_the_good_export(folder, target, settings):
        for name in ("model.onnx", "tokenizer.json", SETTINGS_FILE):
            shutil.copy(minilm / name, target / name)
        record = json.loads((target / SETTINGS_FILE).read_text()) | {"model_id": settings.model_id}
        (target / SETTINGS_FILE).write_text(json.dumps(record))

    monkeypatch.setattr(onnx_export, "export_checked", copy_of_the_good_export)
    cached = resolve_embedding_model("embedded").onnx_path
    assert cached.is_relative_to(zsl_home / "embeddings" / "onnx")
    cached.write_bytes(b"damaged by a disk error")
    embedder = OnnxEmbedder(EmbeddingOptions(model="embedded"))
    assert embedder.files.onnx_path == cached and embedder.encode(["x"]).shape == (1, 384)


@pytest.mark.parametrize("layout", ["onnx/model.onnx", "model.onnx"])
def test_an_e5_model_given_as_an_onnx_file_keeps_its_prefixes(tmp_path, layout):
    folder = tmp_path / "e5-small-v2"
    onnx_path = folder / layout
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx_path.write_bytes(b"an onnx graph")  # resolution reads names and config files, not the graph
    (folder / "tokenizer.json").write_text("{}")
    settings = resolve_embedding_model(str(onnx_path)).settings
    assert (settings.query_prefix, settings.passage_prefix) == ("query: ", "passage: ")
    plain = tmp_path / "minilm" / "onnx" / "model.onnx"
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"an onnx graph")
    (plain.parent.parent / "tokenizer.json").write_text("{}")
    assert resolve_embedding_model(str(plain)).settings.query_prefix == ""


def test_max_length_is_capped_at_the_models_positions(minilm):
    long_text = "word " * 1000
    capped = OnnxEmbedder(EmbeddingOptions(model=str(minilm), max_length=1024))
    assert capped.max_length == 512  # all-MiniLM-L6-v2's max_position_embeddings
    exact = OnnxEmbedder(EmbeddingOptions(model=str(minilm), max_length=512))
    assert np.allclose(capped.encode([long_text]), exact.encode([long_text]), atol=1e-6)
    assert OnnxEmbedder(EmbeddingOptions(model=str(minilm), max_length=300)).max_length == 300
