"""transformers backend on a tiny random-weight Llama built in the test session (SmolLM2's tokenizer)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import drain

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams, stop_prefix_overlap
from zerosearch_lite.models.backends.transformers_backend import TransformersBackend
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.models.spec import ResolvedModel, resolve_model

GREEDY = SamplingParams(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    loaded = load_backend(str(tiny_model_dir))
    assert isinstance(loaded, TransformersBackend)
    return loaded


def test_render_chat_is_chatml_with_generation_prompt(backend):
    prompt = backend.render_chat([{"role": "user", "content": "hi"}])
    assert "<|im_start|>user\nhi<|im_end|>\n" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert not backend.render_chat([{"role": "user", "content": "hi"}], add_generation_prompt=False).endswith(
        "assistant\n"
    )
    assert backend.count_tokens("hello world") == 2


def test_batched_samples_are_prompt_major_with_token_counts(backend):
    short, long = "hello", backend.render_chat([{"role": "user", "content": "hi"}])
    out = backend.generate([short, long], SamplingParams(max_tokens=5, n=2, temperature=0))
    assert len(out) == 4
    assert [c.prompt_tokens for c in out] == [1, 1, backend.count_tokens(long), backend.count_tokens(long)]
    assert all(0 < c.completion_tokens <= 5 for c in out)
    # Greedy samples of one prompt agree, and left padding does not change the short prompt's continuation.
    params = SamplingParams(max_tokens=5, temperature=0)
    alone = [backend.generate([prompt], params)[0].text for prompt in (short, long)]
    assert [c.text for c in out] == [alone[0], alone[0], alone[1], alone[1]]
    assert alone[0] != alone[1]


def test_seed_makes_sampling_reproducible(backend):
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=3, n=2)
    first, again = backend.generate(["hello"], params), backend.generate(["hello"], params)
    assert [c.text for c in first] == [c.text for c in again]
    other = backend.generate(["hello"], SamplingParams(max_tokens=8, temperature=1.0, seed=4, n=2))
    assert [c.text for c in other] != [c.text for c in first]


def test_a_seeded_call_leaves_the_callers_random_stream_alone(backend):
    import torch

    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    backend.generate(["hello"], SamplingParams(max_tokens=4, temperature=1.0, seed=0))  # a seeded simulator call
    drain(backend.stream("hello", SamplingParams(max_tokens=4, temperature=1.0, seed=0)))
    assert torch.equal(torch.rand(3), expected)  # the policy's stream goes on as if the calls never happened


def test_prompts_of_one_call_take_their_own_seeds(backend):
    """A call is seeded by its first prompt's seed: calls of one batch cut into chunks (`--rollout-batch`)
    are seeded apart, so a chunk of repeated samples does not repeat the previous chunk."""
    params = SamplingParams(max_tokens=8, temperature=1.0)
    first = backend.generate(["hello"], replace(params, seeds=(101,)))[0].text
    second = backend.generate(["hello"], replace(params, seeds=(202,)))[0].text
    assert first != second and backend.generate(["hello"], replace(params, seeds=(101,)))[0].text == first


def test_max_tokens_gives_length(backend):
    out = backend.generate(["hello"], SamplingParams(max_tokens=6, temperature=0))[0]
    assert out.finish_reason == "length" and out.completion_tokens == 6 and out.prompt_tokens == 1


def test_stop_string_cuts_text(backend):
    greedy = backend.generate(["hello"], GREEDY)[0].text
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    assert stop.strip(), f"greedy continuation too short for a stop string: {greedy!r}"
    cut = backend.generate(["hello"], SamplingParams(max_tokens=12, temperature=0, stop=[stop]))[0]
    assert cut.text == greedy[: greedy.index(stop)]
    assert cut.finish_reason == "stop" and cut.completion_tokens < 12


def test_stream_chunks_join_to_completion(backend):
    # Sampled (seeded) so the random model emits varied tokens, some starting with a space: the streamer
    # flushes at word boundaries, so a greedy loop of one token would arrive as a single chunk.
    sampled = SamplingParams(max_tokens=12, temperature=1.0, seed=7)
    chunks, completion = drain(backend.stream("hello", sampled))
    assert len(chunks) > 1 and "".join(chunks) == completion.text
    assert completion.text == backend.generate(["hello"], sampled)[0].text
    assert completion.finish_reason == "length" and completion.completion_tokens == 12


def test_stream_never_leaks_a_stop_string(backend):
    greedy = backend.generate(["hello"], GREEDY)[0].text
    stop = greedy[len(greedy) // 2 : len(greedy) // 2 + 3]
    params = SamplingParams(max_tokens=12, temperature=0, stop=[stop])
    chunks, completion = drain(backend.stream("hello", params))
    assert "".join(chunks) == completion.text == greedy[: greedy.index(stop)]
    assert completion.finish_reason == "stop"


def teststop_prefix_overlap():
    assert stop_prefix_overlap("abc </sea", ["</search>"]) == 5
    assert stop_prefix_overlap("abc", ["</search>"]) == 0
    assert stop_prefix_overlap("x<", ["<a>", "</b>"]) == 1


def test_from_objects_samples_in_eval_mode_and_restores_train_mode(backend):
    model = backend.model
    wrapped = TransformersBackend.from_objects(model, backend.tokenizer, model_id="policy")
    model.train()
    try:
        assert wrapped.model_id == "policy"
        assert wrapped.generate(["hello"], GREEDY)[0].text == backend.generate(["hello"], GREEDY)[0].text
        assert model.training
    finally:
        model.eval()


def test_lora_adapter_changes_output(tmp_path, tiny_model_dir, backend):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    tuned = load_backend(str(tiny_model_dir), adapter=str(tmp_path / "adapter"))
    assert tuned.model_id.endswith("+adapter")
    ids = torch.tensor([tuned.tokenize("hello there")])
    with torch.no_grad():
        assert not torch.allclose(tuned.model(ids).logits, backend.model(ids).logits)
    tuned_text = tuned.generate(["hello there"], GREEDY)[0].text
    assert tuned_text != backend.generate(["hello there"], GREEDY)[0].text


def test_missing_paths_raise_one_line_errors(tmp_path, tiny_model_dir):
    missing = tmp_path / "nowhere"
    for model in (
        ResolvedModel("x", "hf", str(missing), "local"),
        ResolvedModel("x", "gguf", str(missing / "m.gguf"), "local"),
        ResolvedModel("x", "hf", str(tmp_path), "local"),  # a folder without config.json
    ):
        with pytest.raises(ZslError, match=str(tmp_path)) as caught:
            TransformersBackend(model)
        assert "\n" not in str(caught.value)
    with pytest.raises(ZslError, match="not a peft adapter folder"):
        load_backend(str(tiny_model_dir), adapter=str(missing))


def test_4bit_needs_cuda(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ZslError, match="needs a CUDA GPU"):
        load_backend(str(tiny_model_dir), load_in_4bit=True)


@pytest.mark.slow
def test_embedded_gguf_loads_through_transformers():
    """The GGUF route (dequantized by transformers, ~20 s on CPU) answers like the llama.cpp backend."""
    gguf = load_backend("embedded", kind="transformers")
    try:
        prompt = gguf.render_chat([{"role": "user", "content": "What is the capital of France? Answer briefly."}])
        out = gguf.generate([prompt], SamplingParams(max_tokens=30, temperature=0))[0]
        assert "Paris" in out.text and out.finish_reason == "stop"
    finally:
        gguf.close()


def test_a_model_loaded_from_gguf_saves_as_a_plain_folder(tmp_path):
    """transformers marks GGUF-loaded models as quantized; ours are plain floats and must save (SFT's merged/)."""
    import json

    from zerosearch_lite.models.hf import load_causal_lm
    from zerosearch_lite.models.spec import resolve_model

    model = load_causal_lm(resolve_model("embedded"))
    model.save_pretrained(tmp_path / "merged")
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    reloaded = load_causal_lm(resolve_model(str(tmp_path / "merged")))
    assert reloaded.config.hidden_size == model.config.hidden_size


def test_the_adapter_decides_the_backend_of_a_gguf_base(tmp_path, embedded_path):
    from zerosearch_lite.models.loading import backend_kind_for

    model = resolve_model("embedded")
    peft_folder = tmp_path / "adapter"
    peft_folder.mkdir()
    assert backend_kind_for(model) == "llama.cpp"
    assert backend_kind_for(model, "auto", str(tmp_path / "lora.gguf")) == "llama.cpp"
    assert backend_kind_for(model, "auto", str(peft_folder)) == "transformers"
    assert backend_kind_for(model, "llama.cpp", str(peft_folder)) == "llama.cpp"  # an explicit choice wins


ABANDONED_STREAM = """
import sys, gc
from zerosearch_lite.models.loading import load_backend
from zerosearch_lite.models.backends.base import SamplingParams
gc.disable()  # keep the abandoned generator alive until exit, as a traceback or a cycle can
backend = load_backend(sys.argv[1])
stream = backend.stream("hello", SamplingParams(max_tokens=1000, temperature=1.0, seed=0))
cycle = [stream]
cycle.append(cycle)
next(stream)
print("abandoned", flush=True)
"""


def test_a_stream_abandoned_at_exit_is_stopped_and_the_process_exits_cleanly(tiny_model_dir):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ABANDONED_STREAM, str(tiny_model_dir)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0 and "abandoned" in done.stdout, done.stderr
    assert "terminate called" not in done.stderr


def test_closing_a_stream_early_stops_its_worker(backend):
    import threading

    stream = backend.stream("hello", SamplingParams(max_tokens=1000, temperature=1.0, seed=0))
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "zsl-transformers-stream"]
