"""Shared fixtures: an isolated ZSL_HOME per test, the embedded GGUF and its llama.cpp backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REPO_DATA = Path(__file__).resolve().parents[1] / "data"  # the QA sets and corpus the project ships


@pytest.fixture(autouse=True)
def zsl_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "zsl_home"
    monkeypatch.setenv("ZSL_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    from zerosearch_lite.models.spec import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def llama_policy():
    from zerosearch_lite.models.loading import load_backend

    backend = load_backend("embedded", n_ctx=4096)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def llama_simulator():
    from zerosearch_lite.models.loading import load_backend

    backend = load_backend("embedded", n_ctx=2048)
    yield backend
    backend.close()


def drain(gen):
    """Consume a backend stream: (the text chunks, the `Completion` it returned)."""
    chunks = []
    while True:
        try:
            chunks.append(next(gen))
        except StopIteration as done:
            return chunks, done.value


def run_zsl(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real `zsl` entry point in a subprocess (the way a user does)."""
    full_env = os.environ | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "zerosearch_lite.cli", *args],
        check=False, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_path) -> Path:
    """A tiny random-weight Llama (SmolLM2's tokenizer and vocab), saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_path.parent), gguf_file=embedded_path.name)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def takes_ctrl_c() -> None:
    """`preexec_fn` of a child the test interrupts: SIGINT back to its default. A suite started in the
    background of a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler, so the child would run to the end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
