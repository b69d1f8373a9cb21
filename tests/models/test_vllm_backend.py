"""vLLM backend. Two kinds of tests:

- Everywhere: our side of the mapping, against a stand-in `vllm` module that records what the backend asks
  of vLLM's documented API (engine options, `SamplingParams`, token prompts, `LoRARequest` ids, sleep/wake)
  and returns outputs shaped like vLLM's. It cannot catch vLLM changing its API; the real tests below do.
  Plus the GBNF grammars compiled by llguidance, the parser vLLM's "guidance" structured-output backend uses.
- Where vLLM is importable and CUDA is present: the same behaviours on a real engine (skipped otherwise).
"""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.backends.base import SamplingParams
from zerosearch_lite.models.loading import load_backend

EOS = 2


# --- a stand-in for the `vllm` package ---------------------------------------------------------------


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeSample:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: object = None
    logprobs: list | None = None


@dataclass
class FakeRequestOutput:
    prompt_token_ids: list[int]
    outputs: list[FakeSample]
    num_cached_tokens: int = 0


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@dataclass
class FakeStructuredOutputsParams:
    grammar: str | None = None


@dataclass
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class FakeEngine:
    removed_loras: list[int] = field(default_factory=list)
    model_config: object = None

    def remove_lora(self, lora_id: int) -> bool:
        self.removed_loras.append(lora_id)
        return True


class FakeLLM:
    """Records the engine options and every call; sample s of a prompt samples [100 + s, 101 + s] and then
    EOS when s is even (finish "stop", stop_reason None, as vLLM reports EOS), or hits the length limit."""

    instances: ClassVar[list[FakeLLM]] = []
    tokenizer: ClassVar[object] = None

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls: list[dict] = []
        self.events: list[str] = []
        self.llm_engine = FakeEngine(model_config=types.SimpleNamespace(max_model_len=kwargs.get("max_model_len")))
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return FakeLLM.tokenizer

    def generate(self, prompts, sampling_params, *, lora_request=None, use_tqdm=True):
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        self.events.append("generate")
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            if (params.kwargs.get("structured_outputs") or FakeStructuredOutputsParams()).grammar == "bad":
                raise ValueError("grammar is not valid\nat line 1")
            samples = []
            for s in range(params.kwargs["n"]):
                ended = s % 2 == 0
                ids = [100 + s, 101 + s] + ([EOS] if ended else [])
                logprobs = [{t: FakeLogprob(-0.25 * (k + 1))} for k, t in enumerate(ids)]
                samples.append(FakeSample(s, f"out{s}", ids, "stop" if ended else "length", None, logprobs))
            # Reversed: the backend must order samples by index.
            outputs.append(FakeRequestOutput(prompt["prompt_token_ids"], samples[::-1], num_cached_tokens=1))
        return outputs

    def sleep(self, level: int = 1) -> None:
        self.events.append(f"sleep({level})")

    def wake_up(self) -> None:
        self.events.append("wake_up")


@pytest.fixture(scope="module")
def word_tokenizer():
    """A small word-level tokenizer: fast to build, with BOS/EOS and no chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": EOS, **{w: i + 3 for i, w in enumerate(["hello", "world", "who", "wrote", "it"])}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture
def fake_vllm(monkeypatch, word_tokenizer):
    package = types.ModuleType("vllm")
    package.__version__ = "0.32.0"
    package.LLM, package.SamplingParams = FakeLLM, FakeSamplingParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = FakeStructuredOutputsParams
    lora, lora_request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = FakeLoRARequest
    for name, module in [("vllm", package), ("vllm.sampling_params", sampling), ("vllm.lora", lora),
                         ("vllm.lora.request", lora_request)]:
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances, FakeLLM.tokenizer = [], word_tokenizer
    return FakeLLM


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A folder that resolves as a Hugging Face model (the stand-in never reads the weights)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def adapter_folder(path: Path, name: str) -> Path:
    folder = path / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_engine_gets_the_memory_cap_lora_sleep_mode_and_grammar_backend(fake_vllm, model_dir):
    backend = load_backend(str(model_dir), "vllm", n_ctx=1024, gpu_memory_utilization=0.3, enable_sleep_mode=True)
    kwargs = fake_vllm.instances[-1].kwargs
    assert kwargs["model"] == str(model_dir)
    assert kwargs["gpu_memory_utilization"] == 0.3 and kwargs["max_model_len"] == 1024
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 64 and kwargs["max_loras"] == 1
    assert kwargs["enable_sleep_mode"] is True
    assert kwargs["structured_outputs_config"] == {"backend": "guidance"}
    assert "tokenizer" not in kwargs and "quantization" not in kwargs  # unset options are left to vLLM
    assert backend.context_size == 1024 and backend.supports_grammar is True


def test_bad_options_missing_vllm_and_urls_are_one_line_errors(fake_vllm, model_dir, monkeypatch):
    with pytest.raises(ZslError, match="gpu_memory_utilization"):
        load_backend(str(model_dir), "vllm", gpu_memory_utilization=1.5)
    with pytest.raises(ZslError, match="for a vLLM server use its URL"):
        load_backend("http://127.0.0.1:9/v1", "vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM gives
    with pytest.raises(ZslError, match=r"vLLM is not installed: pip install 'zerosearch-lite\[gpu\]'"):
        load_backend(str(model_dir), "vllm")


def test_sampling_fields_and_token_prompts_map_to_vllm(fake_vllm, model_dir, word_tokenizer):
    backend = load_backend(str(model_dir), "vllm", n_ctx=64)
    params = SamplingParams(max_tokens=60, temperature=0.5, top_p=0.8, stop=["</search>"], seed=3, n=2,
                            repeat_penalty=1.1, grammar='root ::= "yes"')
    backend.generate(["hello world", [7, 6, 5, 4, 3, 2, 1, 0, 9, 9]], params)
    call = fake_vllm.instances[-1].calls[-1]
    hello_ids = word_tokenizer("hello world")["input_ids"]
    assert call["prompts"] == [{"prompt_token_ids": hello_ids}, {"prompt_token_ids": [7, 6, 5, 4, 3, 2, 1, 0, 9, 9]}]
    first, second = (p.kwargs for p in call["params"])
    grammar = first.pop("structured_outputs")
    assert grammar.grammar == 'root ::= "yes"'
    assert first == {"n": 2, "temperature": 0.5, "top_p": 0.8, "max_tokens": 60, "seed": 3,
                     "repetition_penalty": 1.1, "skip_special_tokens": True, "stop": ["</search>"]}
    assert second["max_tokens"] == 64 - 10  # clipped to what is left of the context window
    backend.generate(["hello"], SamplingParams(temperature=0.0))
    greedy = fake_vllm.instances[-1].calls[-1]["params"][0].kwargs
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and "stop" not in greedy
    assert "structured_outputs" not in greedy and "logprobs" not in greedy


def test_each_prompt_of_a_call_gets_its_own_seed(fake_vllm, model_dir):
    backend = load_backend(str(model_dir), "vllm", n_ctx=64)
    backend.generate(["hello", "hello"], SamplingParams(seeds=(3, 8)))
    assert [p.kwargs["seed"] for p in fake_vllm.instances[-1].calls[-1]["params"]] == [3, 8]


def test_completions_are_prompt_major_with_token_ids_without_the_end_token(fake_vllm, model_dir):
    backend = load_backend(str(model_dir), "vllm")
    out = backend.generate(["hello", [5, 6, 7]], SamplingParams(n=2))
    assert [c.text for c in out] == ["out0", "out1", "out0", "out1"]
    assert [c.token_ids for c in out] == [[100, 101], [101, 102]] * 2  # EOS of sample 0 dropped
    assert [c.finish_reason for c in out] == ["stop", "length"] * 2
    assert [c.prompt_tokens for c in out] == [1, 1, 3, 3]
    assert [c.completion_tokens for c in out] == [2, 2, 2, 2]
    assert all(c.cached_prompt_tokens == 1 for c in out)


def test_logprobs_when_asked_align_with_the_token_ids(fake_vllm, model_dir):
    backend = load_backend(str(model_dir), "vllm")
    params = SamplingParams(n=2)
    params.logprobs = True  # type: ignore[attr-defined]  # the field the trainer's log-prob requests set
    eos_sample, length_sample = backend.generate(["hello"], params)
    assert fake_vllm.instances[-1].calls[-1]["params"][0].kwargs["logprobs"] == 0
    assert eos_sample.token_logprobs == [-0.25, -0.5]  # type: ignore[attr-defined]
    assert length_sample.token_logprobs == [-0.25, -0.5]  # type: ignore[attr-defined]


def test_prompt_longer_than_the_context_and_refused_requests_are_one_line_errors(fake_vllm, model_dir):
    backend = load_backend(str(model_dir), "vllm", n_ctx=64)
    with pytest.raises(ZslError, match="prompt of 65 tokens does not fit the context window of 64"):
        backend.generate([list(range(65))], SamplingParams())
    with pytest.raises(ZslError, match="vLLM refused the request: grammar is not valid$"):
        backend.generate(["hello"], SamplingParams(grammar="bad"))


def test_each_adapter_hand_over_is_a_new_lora_request(fake_vllm, model_dir, tmp_path):
    backend = load_backend(str(model_dir), "vllm")
    llm = fake_vllm.instances[-1]
    step = adapter_folder(tmp_path, "adapter")
    first = backend.set_adapter(step)
    backend.generate(["hello"], SamplingParams())
    second = backend.set_adapter(step)  # the same folder rewritten by the next step
    backend.generate(["hello"], SamplingParams())
    used = [call["lora"] for call in llm.calls]
    assert [(r.lora_int_id, r.lora_path) for r in used] == [(1, str(step.resolve())), (2, str(step.resolve()))]
    assert first != second and backend.model_id.endswith(second)
    assert llm.llm_engine.removed_loras == [1]
    assert backend.set_adapter(None) is None
    backend.generate(["hello"], SamplingParams())
    assert llm.calls[-1]["lora"] is None and "+" not in backend.model_id
    with pytest.raises(ZslError, match="not a peft adapter folder"):
        backend.set_adapter(tmp_path)


def test_adapter_at_load_and_without_lora(fake_vllm, model_dir, tmp_path):
    step = adapter_folder(tmp_path, "adapter")
    backend = load_backend(str(model_dir), "vllm", adapter=str(step))
    backend.generate(["hello"], SamplingParams())
    assert fake_vllm.instances[-1].calls[-1]["lora"].lora_int_id == 1
    plain = load_backend(str(model_dir), "vllm", enable_lora=False)
    assert "max_lora_rank" not in fake_vllm.instances[-1].kwargs
    with pytest.raises(ZslError, match="without LoRA"):
        plain.set_adapter(step)


def test_sleep_needs_sleep_mode_and_generate_wakes_the_engine(fake_vllm, model_dir):
    with pytest.raises(ZslError, match="without sleep mode"):
        load_backend(str(model_dir), "vllm").sleep()
    backend = load_backend(str(model_dir), "vllm", enable_sleep_mode=True)
    llm = fake_vllm.instances[-1]
    backend.sleep()
    backend.sleep()  # already asleep: not sent twice
    backend.generate(["hello"], SamplingParams())
    assert llm.events == ["sleep(1)", "wake_up", "generate"]
    backend.wake_up()  # awake already: nothing to do
    assert llm.events[-1] == "generate"


# --- grammars through llguidance (vLLM's "guidance" structured-output backend) -------------------------


@pytest.fixture(scope="module")
def embedded_tokenizer(embedded_path):
    pytest.importorskip("llguidance")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(embedded_path.parent), gguf_file=embedded_path.name)


def grammar_accepts(tokenizer, gbnf: str, text: str) -> bool:
    import llguidance
    import llguidance.hf

    matcher = llguidance.LLMatcher(llguidance.hf.from_tokenizer(tokenizer), llguidance.grammar_from("grammar", gbnf))
    assert not matcher.is_error(), matcher.get_error()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    accepted = matcher.try_consume_tokens(ids)
    return accepted == len(ids) and matcher.is_accepting()


def test_protocol_and_document_grammars_compile_for_the_guidance_backend(embedded_tokenizer):
    from zerosearch_lite.agent.protocol import protocol_grammar
    from zerosearch_lite.simulator.prompts import documents_grammar

    turn = protocol_grammar()
    assert grammar_accepts(embedded_tokenizer, turn, "<think>look it up</think>\n<search>frankenstein author</search>")
    assert not grammar_accepts(embedded_tokenizer, turn, "<search>no thinking first</search>")
    docs = documents_grammar(2, min_chars=10, max_chars=60)
    good = "Doc 1: Mary Shelley wrote Frankenstein.\nDoc 2: It was published in 1818.\n"
    assert grammar_accepts(embedded_tokenizer, docs, good)
    assert not grammar_accepts(embedded_tokenizer, docs, "Doc 1: too short\nDoc 2: x\n")


# --- a real vLLM engine (CUDA only) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_vllm_model(tmp_path_factory, embedded_path):
    """A tiny random Llama that vLLM's attention kernels take (head size 64), SmolLM2's tokenizer, and a
    random LoRA adapter for it."""
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM runs on a CUDA GPU")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("vllm-tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_path.parent), gguf_file=embedded_path.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(folder / "adapter")
    return folder


@pytest.fixture(scope="module")
def real_vllm(real_vllm_model):
    backend = load_backend(str(real_vllm_model / "model"), "vllm", n_ctx=512, gpu_memory_utilization=0.3,
                           enable_sleep_mode=True, enforce_eager=True, max_lora_rank=8)
    yield backend
    backend.close()


def test_real_vllm_samples_token_ids_with_stops_and_seeds(real_vllm):
    params = SamplingParams(max_tokens=16, temperature=1.0, n=2, seed=7)
    first = real_vllm.generate(["<|im_start|>user\nhello<|im_end|>\n", [1, 2, 3]], params)
    again = real_vllm.generate(["<|im_start|>user\nhello<|im_end|>\n", [1, 2, 3]], params)
    assert len(first) == 4 and [c.token_ids for c in first] == [c.token_ids for c in again]
    for completion in first:
        assert completion.token_ids is not None and len(completion.token_ids) == completion.completion_tokens
        assert completion.finish_reason in ("stop", "length")
    assert first[2].prompt_tokens == 3
    stopped = real_vllm.generate(["hello"], SamplingParams(max_tokens=64, temperature=1.0, stop=["e"], seed=1))[0]
    assert "e" not in stopped.text


def test_real_vllm_follows_a_gbnf_grammar(real_vllm):
    out = real_vllm.generate(["answer:"] * 4, SamplingParams(max_tokens=8, grammar='root ::= "yes" | "no"', seed=0))
    assert {c.text for c in out} <= {"yes", "no"}


def test_real_vllm_hands_over_adapters_and_sleeps(real_vllm, real_vllm_model):
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    params = SamplingParams(max_tokens=4, temperature=0.0)
    params.logprobs = True  # type: ignore[attr-defined]
    base = real_vllm.generate(["hello world"], greedy)[0].token_ids
    real_vllm.set_adapter(real_vllm_model / "adapter")
    adapted = real_vllm.generate(["hello world"], greedy)[0].token_ids
    assert adapted != base
    scored = real_vllm.generate(["hello world"], params)[0]
    assert all(math.isfinite(x) and x <= 0 for x in scored.token_logprobs)  # type: ignore[attr-defined]
    real_vllm.set_adapter(None)
    real_vllm.sleep()
    assert real_vllm.generate(["hello world"], greedy)[0].token_ids == base  # woken up, same weights
