"""The embedded all-MiniLM-L6-v2, converted to ONNX once per test session and shared by the test files."""

from __future__ import annotations

import os
from pathlib import Path

from zerosearch_lite.simulator.embeddings import EmbeddingOptions, resolve_embedding_model


def converted_minilm(tmp_path_factory) -> Path:
    """The folder of the session's one conversion (model.onnx, tokenizer.json, recorded settings)."""
    home = tmp_path_factory.getbasetemp() / "minilm-home"
    onnx_folder = home / "embeddings" / "onnx"
    found = sorted(onnx_folder.glob("*/model.onnx"))
    if found:
        return found[0].parent
    previous = os.environ.get("ZSL_HOME")
    os.environ["ZSL_HOME"] = str(home)  # session scope: the per-test ZSL_HOME fixture is not active here
    try:
        return resolve_embedding_model("embedded").onnx_path.parent
    finally:
        if previous is None:
            os.environ.pop("ZSL_HOME", None)
        else:
            os.environ["ZSL_HOME"] = previous


def fast_options(folder: Path, **overrides) -> EmbeddingOptions:
    """Short passages keep corpus indexing in tests to a few seconds on two cores."""
    return EmbeddingOptions(model=str(folder), max_length=overrides.pop("max_length", 48), **overrides)
