"""Export (models/export/: the pipeline with gguf_convert, gguf_vocab, gguf_verify and quantize), checked with real
llama.cpp on the written files.

Tiny random-weight models (SmolLM2's tokenizer) cover the architectures, both routes and the failure paths
in seconds; the embedded SmolLM2-135M round trip compares transformers + LoRA with llama.cpp at f16 and
q8_0, then runs `zsl ask` and `zsl search` on the exported file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_zsl

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.export import ExportConfig, export_loaded, export_model
from zerosearch_lite.models.export.gguf_vocab import llama_pre_tokenizer

# f32 files of the tiny models: only the order of float sums differs from transformers (measured up to
# ~3e-3 with their sharpened attention); a wrong q/k or LoRA-B row layout shows as 0.4-0.8.
F32_TOLERANCE = 1e-2
# The embedded model at f16 (f16 weights; llama.cpp's kernels): measured max |diff| 0.027-0.033.
F16_TOLERANCE = 0.1
PROMPTS = (
    "The capital of France is",
    "<|im_start|>user\nWho wrote Frankenstein?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_lora(model, folder: Path, *, seed: int, r: int = 4, b_std: float | None = None):
    """A LoRA on every linear layer with non-zero B (peft starts B at zero), saved to `folder`."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                                  init_lora_weights=b_std is not None))
    if b_std is not None:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, b_std)
    peft_model.save_pretrained(str(folder))
    return peft_model.eval()


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(path: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=256, logits_all=True, n_gpu_layers=0, lora_path=str(lora) if lora else None,
                verbose=False)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)])
    llm.close()
    return logits


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".partial"))


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


# --- tiny models ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Tiny random models: a Llama (tied embeddings), a Qwen2 with random q/k/v biases, and a Llama with
    llama3 rope scaling and its own output matrix. Their q/k weights are scaled up so attention is sharp:
    at init it is nearly uniform, and a wrong rope layout would barely show in the logits."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    shape = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 1024,
             "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    torch.manual_seed(1)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=True)),
        "qwen2": Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True)),
        "llama3-rope": LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False, rope_parameters=rope)),
    }
    folders = {}
    for name, model in models.items():
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if ".q_proj." in param_name or ".k_proj." in param_name:
                    param.mul_(8)
                if param_name.endswith(".bias"):
                    param.normal_(0, 0.5)  # zero at init; random so that a misplaced bias shows
        folders[name] = tmp_path_factory.mktemp(f"tiny-{name}")
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def probe_ids(folder: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))("The capital of France is Paris, 1234.")["input_ids"]


@pytest.mark.parametrize("variant", ["llama", "qwen2", "llama3-rope"])
def test_merged_export_matches_transformers(variant, tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tiny_models[variant]
    model = add_lora(AutoModelForCausalLM.from_pretrained(str(folder)), tmp_path / "lora", seed=2)
    ids = probe_ids(folder)
    expected = hf_logits(model, ids)
    with model.disable_adapter():
        without_adapter = hf_logits(model, ids)
    out = tmp_path / "out" / "tiny.gguf"
    out.parent.mkdir()
    result = export_model(ExportConfig(model=str(folder), adapter=str(tmp_path / "lora"), out=str(out), quant="f32"))
    got = llama_logits(result.path, ids)
    assert np.abs(got - expected).max() < F32_TOLERANCE
    assert np.abs(expected - without_adapter).max() > 20 * F32_TOLERANCE  # the export carries the adapter
    card = json.loads(result.card_path.read_text())
    assert result.card_path.name == "tiny.card.json" and card == result.card
    assert card["sha256"] == sha256(out) and card["size_bytes"] == out.stat().st_size
    assert card["route"] == "merged" and card["quant"] == "f32" and card["architecture"] == ("qwen2" if variant == "qwen2" else "llama")
    assert card["adapter"]["sha256"] == sha256(tmp_path / "lora" / "adapter_model.safetensors")
    assert card["verification"]["tokenizer_identical"] and card["verification"]["top1_agrees"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.card.json", "tiny.gguf"]


def test_adapter_route_matches_transformers(tiny_models, tmp_path):
    """The adapter as a llama.cpp LoRA beside an f32 GGUF of its base."""
    from transformers import AutoModelForCausalLM

    folder = tiny_models["llama"]
    model = add_lora(AutoModelForCausalLM.from_pretrained(str(folder)), tmp_path / "lora", seed=3)
    ids = probe_ids(folder)
    expected = hf_logits(model, ids)
    base = export_model(ExportConfig(model=str(folder), out=str(tmp_path / "base.gguf"), quant="f32")).path
    lora = export_model(ExportConfig(model=str(base), adapter=str(tmp_path / "lora"), out=str(tmp_path / "lora.gguf"),
                                     quant="f32", route="adapter"))
    assert np.abs(llama_logits(base, ids, lora=lora.path) - expected).max() < F32_TOLERANCE
    assert lora.card["route"] == "adapter" and lora.card["base"]["sha256"] == sha256(base)
    assert lora.card["verification"]["loads_beside_base"]
    assert lora.path.stat().st_size < base.stat().st_size / 10
    assert leftovers(tmp_path) == []


def test_cli_export_writes_a_card_with_the_training_run(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), run / "adapter", seed=4)
    (run / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "lr": 0.0002}))
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.json").write_text(json.dumps({"step": 7}))
    out = tmp_path / "exports" / "sim.q8_0.gguf"
    out.parent.mkdir()
    result = run_zsl("export", str(tiny_model_dir), "--adapter", str(run / "adapter"), "--to", str(out),
                     "--quant", "q8_0", "--json")
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card == json.loads((out.parent / "sim.q8_0.card.json").read_text())
    assert card["quant"] == "q8_0" and card["sha256"] == sha256(out)
    assert card["training_run"] == {"path": str(run.resolve()), "config": {"model": str(tiny_model_dir), "lr": 0.0002},
                                    "step": 7}
    assert card["base"]["path"] == str(tiny_model_dir.resolve()) and card["base"]["sha256"] is None
    assert set(card["seconds"]) >= {"load", "merge", "write", "quantize", "verify", "total"}
    again = run_zsl("export", str(tiny_model_dir), "--to", str(out))
    assert_one_line_error(again, "exists", "--force")
    assert card["sha256"] == sha256(out)


def test_verification_catches_a_wrong_tensor_layout(tiny_models, tmp_path, monkeypatch):
    from zerosearch_lite.models.export import gguf_convert

    monkeypatch.setattr(gguf_convert, "rope_pairs_interleaved", lambda weight, n_head: weight)
    with pytest.raises(ZslError, match="verification failed: f16 logits differ"):
        export_model(ExportConfig(model=str(tiny_models["llama"]), out=str(tmp_path / "bad.gguf"), quant="f16"))
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_tensor_layout_is_caught_under_a_quantized_target_too(tiny_models, tmp_path, monkeypatch):
    """A q8_0 file's logits are only judged loosely; its f16 source is checked strictly before quantizing."""
    from zerosearch_lite.models.export import gguf_convert

    good = export_model(ExportConfig(model=str(tiny_models["llama"]), out=str(tmp_path / "good.gguf"), quant="q8_0"))
    assert good.card["verification"]["f16_source"]["relative_logit_diff"] < 0.05
    monkeypatch.setattr(gguf_convert, "rope_pairs_interleaved", lambda weight, n_head: weight)
    with pytest.raises(ZslError, match="verification failed: f16 logits differ"):
        export_model(ExportConfig(model=str(tiny_models["llama"]), out=str(tmp_path / "bad.gguf"), quant="q8_0"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.card.json", "good.gguf"]


def test_an_interrupted_export_leaves_no_file(tiny_model_dir, tmp_path):
    def interrupt(stage: str, done: int, total: int) -> None:
        if stage.startswith("write") and done == total // 2:
            raise KeyboardInterrupt

    out = tmp_path / "half.gguf"
    with pytest.raises(KeyboardInterrupt):
        export_model(ExportConfig(model=str(tiny_model_dir), out=str(out), quant="q8_0"), progress=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, tiny_model_dir) -> SimpleNamespace:
    import gguf
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("bad-inputs")
    add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), folder / "tiny-lora", seed=5)
    truncated = folder / "truncated-lora"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_bytes((folder / "tiny-lora" / "adapter_config.json").read_bytes())
    weights = (folder / "tiny-lora" / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    gpt2 = folder / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    writer = gguf.GGUFWriter(str(folder / "gpt2.gguf"), "gpt2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return SimpleNamespace(folder=folder, truncated=truncated, gpt2=gpt2, gpt2_gguf=folder / "gpt2.gguf",
                           tiny_lora=folder / "tiny-lora", tiny=tiny_model_dir)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("truncated adapter", ["truncated or corrupt", "adapter_model.safetensors"]),
        ("truncated adapter, adapter route", ["truncated or corrupt"]),
        ("architecture in config.json", ["architecture 'gpt2' is not supported", "llama, qwen2"]),
        ("architecture in a GGUF", ["architecture 'gpt2' is not supported"]),
        ("adapter of another base", ["does not fit this base", "64"]),
        ("unknown quantization", ["unknown quantization 'q3'", "q4_k_m"]),
    ],
)
def test_bad_input_fails_with_one_line_and_writes_nothing(case, needles, bad_inputs, tmp_path):
    b = bad_inputs
    out = str(tmp_path / "out.gguf")
    args = {
        "truncated adapter": [str(b.tiny), "--adapter", str(b.truncated)],
        "truncated adapter, adapter route": ["embedded", "--adapter", str(b.truncated), "--route", "adapter",
                                             "--quant", "f16"],
        "architecture in config.json": [str(b.gpt2)],
        "architecture in a GGUF": [str(b.gpt2_gguf), "--adapter", str(b.tiny_lora)],
        "adapter of another base": ["embedded", "--adapter", str(b.tiny_lora)],
        "unknown quantization": [str(b.tiny), "--quant", "q3"],
    }[case]
    assert_one_line_error(run_zsl("export", *args, "--to", out), *needles)
    assert list(tmp_path.iterdir()) == []


def test_pre_tokenizer_names():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert llama_pre_tokenizer({"pre_tokenizer": byte_level}) == "gpt-2"
    digits = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    assert llama_pre_tokenizer({"pre_tokenizer": digits}) == "smollm"
    words = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
    tail = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    for numbers, name in ((r"\p{N}{1,3}", "llama-bpe"), (r"\p{N}", "qwen2")):
        split = {"type": "Split", "pattern": {"Regex": words + numbers + tail}, "behavior": "Isolated"}
        sequence = {"type": "Sequence", "pretokenizers": [split, {"type": "ByteLevel", "use_regex": False}]}
        assert llama_pre_tokenizer({"pre_tokenizer": sequence}) == name
    with pytest.raises(ZslError, match="unrecognized pre-tokenizer"):
        llama_pre_tokenizer({"pre_tokenizer": {"type": "Metaspace"}})


# --- the embedded model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded_round_trip(tmp_path_factory, embedded_path) -> SimpleNamespace:
    """SmolLM2-135M loaded by transformers with a LoRA (all linear layers, B ~ N(0, 0.02)): reference
    logits on PROMPTS with and without the adapter, then the merged model exported at f16 and q8_0."""
    from llama_cpp import Llama

    from zerosearch_lite.models.hf import load_causal_lm
    from zerosearch_lite.models.spec import resolve_model

    folder = tmp_path_factory.mktemp("embedded-export")
    base = resolve_model("embedded")
    model = add_lora(load_causal_lm(base, device="cpu", dtype="float32"), folder / "adapter", seed=0, r=8,
                     b_std=0.02)
    vocab = Llama(str(embedded_path), n_ctx=64, n_gpu_layers=0, verbose=False)
    ids = [vocab.tokenize(p.encode(), add_bos=False, special=True) for p in PROMPTS]
    vocab.close()
    expected = [hf_logits(model, i)[-1] for i in ids]
    with model.disable_adapter():
        without_adapter = [hf_logits(model, i)[-1] for i in ids]
    merged = model.merge_and_unload()
    exports = {quant: export_loaded(merged, base, folder / f"emb.{quant}.gguf", quant=quant, verify=False)
               for quant in ("f16", "q8_0")}
    return SimpleNamespace(folder=folder, ids=ids, expected=expected, without_adapter=without_adapter,
                           exports=exports, base=base)


def last_logits(path: Path, prompts: list[list[int]], lora: Path | None = None) -> list[np.ndarray]:
    """llama.cpp's next-token logits after each prompt, from one loaded model."""
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=256, logits_all=True, n_gpu_layers=0, lora_path=str(lora) if lora else None,
                verbose=False)
    found = []
    for ids in prompts:
        llm.reset()
        llm.eval(ids)
        found.append(np.array(llm.scores[len(ids) - 1]))
    llm.close()
    return found


def test_round_trip_f16_matches_transformers(embedded_round_trip):
    rt = embedded_round_trip
    found = last_logits(rt.exports["f16"].path, rt.ids)
    for got, expected, without in zip(found, rt.expected, rt.without_adapter, strict=True):
        diff = np.abs(got - expected).max()
        assert got.argmax() == expected.argmax()
        assert diff < F16_TOLERANCE
        assert np.abs(expected - without).max() > 5 * diff  # the adapter's effect is carried, not rounding


def test_round_trip_q8_0_agrees_at_top1_in_half_the_size(embedded_round_trip):
    rt = embedded_round_trip
    path = rt.exports["q8_0"].path
    for got, expected in zip(last_logits(path, rt.ids), rt.expected, strict=True):
        assert got.argmax() == expected.argmax()
    ratio = path.stat().st_size / rt.exports["f16"].path.stat().st_size
    assert 0.45 < ratio < 0.6
    assert rt.exports["q8_0"].card["quant"] == "q8_0"


def test_tokenizer_and_chat_template_are_copied_from_the_gguf_base(embedded_round_trip, embedded_path):
    from gguf import GGUFReader

    base = GGUFReader(str(embedded_path)).fields
    exported = GGUFReader(str(embedded_round_trip.exports["q8_0"].path)).fields
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.chat_template",
                "tokenizer.ggml.eos_token_id", "general.license"):
        assert exported[key].contents() == base[key].contents()


def test_adapter_route_on_the_embedded_base(embedded_round_trip, embedded_path):
    """The LoRA beside the Q4_1 base moves llama.cpp's logits toward transformers + LoRA."""
    rt = embedded_round_trip
    lora = export_model(ExportConfig(model="embedded", adapter=str(rt.folder / "adapter"), route="adapter",
                                     quant="f16", out=str(rt.folder / "emb.lora.gguf")))
    assert lora.path.stat().st_size < rt.exports["q8_0"].path.stat().st_size / 10
    found = zip(last_logits(embedded_path, rt.ids, lora=lora.path), last_logits(embedded_path, rt.ids),
                rt.expected, strict=True)
    for with_lora, plain, expected in found:
        assert with_lora.argmax() == expected.argmax()
        assert np.abs(with_lora - expected).max() < np.abs(plain - expected).max()


@pytest.mark.integration
def test_exported_gguf_runs_ask_and_search(embedded_round_trip):
    exported = str(embedded_round_trip.exports["q8_0"].path)
    search = run_zsl("search", "author of frankenstein", "--simulator", exported, "-k", "2", "--json")
    assert search.returncode == 0, search.stderr
    assert json.loads(search.stdout)["docs"]
    # With the protocol grammar the first turn must search (min-searches 1): the policy file writes the query,
    # the same file simulates the documents, the second turn reads them.
    ask = run_zsl("ask", "who wrote frankenstein?", "--policy", exported, "--simulator", exported,
                  "--grammar", "on", "--max-turns", "2", "--max-tokens", "160", "-k", "2", "--seed", "1",
                  "--no-store", "--json")
    assert ask.returncode == 0, ask.stderr
    steps = json.loads(ask.stdout)["steps"]
    assert any(s["type"] == "search" and s["docs"] for s in steps)
