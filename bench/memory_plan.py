"""GPU memory plan for one 24 GB card: an analytic estimate of the peak memory of simulator SFT and of a
GRPO step (policy and simulator in one process), and, with `--measure` (CUDA only), the peak measured
with random-weight models of the same shapes, side by side.

The estimate counts NF4 weights with their quantization constants, the weights bitsandbytes leaves in
float (embeddings, norms, biases), LoRA weights, gradients and 8-bit AdamW states, checkpointed block
inputs, the larger of the vocabulary logits and one block's backward, the KV cache and prefill working
set of `generate`, and CUDA context plus allocator slack. Shapes are hard-coded (no hub access).
The residual stream is bf16 by default, as `train_lite.modeling.load_base` leaves it; `--stream fp32`
counts the stream peft's `prepare_model_for_kbit_training` alone would leave. `--measure` loads through
the project's own loaders (`train_lite.modeling.load_base`/`add_lora`, the simulator through
`models.loading.load_backend` as `zsl train grpo --simulator-4bit` does) and computes log-probs with
`train_lite.grpo_loss.token_logprobs`, so it measures what the trainers run, dtype choices included. `--profile-cpu` checks the activation and
logits accounting without a GPU: PyTorch's memory timeline of the same steps on the model cut to a few
blocks. Downloads nothing.

    python bench/memory_plan.py                               # estimate table (CPU is enough)
    python bench/memory_plan.py --arch llama-3.2-3b --max-context 3072 --micro-batch 2
    python bench/memory_plan.py --profile-cpu                 # ~2 min on 2 cores, ~4 GB of RAM
    python bench/memory_plan.py --measure --json peaks.json   # CUDA + bitsandbytes + peft
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

GIB = 1024**3
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes, 8-bit absmax per 64, fp32 absmax per 256 blocks
CUDA_CONTEXT_BYTES = 0.55 * GIB  # context, kernels and cuBLAS workspace outside PyTorch's counters
ALLOCATOR_SLACK = 0.10  # caching-allocator fragmentation, as a share of the transient (non-weight) bytes
CARD_BYTES = 24 * GIB


@dataclass(frozen=True)
class Arch:
    """A decoder-only transformer's shape, enough to count bytes and to build a random-weight model."""

    name: str
    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    qkv_bias: bool
    bos: int
    eos: int
    rope_theta: float

    @property
    def q_out(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_out(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the seven linear layers of one block: q, k, v, o, gate, up, down."""
        h, i = self.hidden, self.intermediate
        return [(h, self.q_out), (h, self.kv_out), (h, self.kv_out), (self.q_out, h), (h, i), (h, i), (i, h)]

    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes())

    def unquantized_params(self) -> int:
        """Embeddings (and an untied lm_head), norms and biases: bitsandbytes leaves these in float."""
        bias = (self.q_out + 2 * self.kv_out) if self.qkv_bias else 0
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + (2 * self.layers + 1) * self.hidden + self.layers * bias

    def lora_params(self, r: int) -> int:
        return self.layers * r * sum(a + b for a, b in self.linear_shapes())

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_out * dtype_bytes


ARCHS = {
    "qwen2.5-3b": Arch("qwen2.5-3b", "qwen2", 2048, 36, 16, 2, 128, 11008, 151936, True, True,
                       151643, 151645, 1_000_000.0),
    "llama-3.2-3b": Arch("llama-3.2-3b", "llama", 3072, 28, 24, 8, 128, 8192, 128256, True, False,
                         128000, 128009, 500_000.0),
    # A smoke-test shape for --measure (seconds, not minutes); not a plan.
    "tiny": Arch("tiny", "qwen2", 256, 2, 4, 2, 64, 704, 4096, True, True, 1, 2, 10_000.0),
}


@dataclass(frozen=True)
class SFTPlan:
    """Simulator SFT (`zsl sim sft`): every row padded to `max_length` is the worst case."""

    batch_size: int = 4
    grad_accum: int = 4
    max_length: int = 1024
    lora_r: int = 16
    lora_dropout: float = 0.05


@dataclass(frozen=True)
class GRPOPlan:
    """One GRPO step on one GPU: policy (NF4 + LoRA) and simulator (NF4, no grad) in one process."""

    questions: int = 8
    group_size: int = 5
    max_tokens_per_turn: int = 256
    max_context: int = 2048
    rollout_chunk: int = 20  # rows per policy generate call (--rollout-batch); 0 = all questions × G at once
    micro_batch: int = 4
    logprob_chunk: int = 256
    sim_prompt: int = 256  # simulator prompt tokens (instruction, query, question and answer)
    sim_new: int = 320  # k = 5 documents of ~30 words each, plus their "Doc i:" labels
    lora_r: int = 16
    lora_dropout: float = 0.0  # the GRPO trainer's LoRA has none
    sim_nf4: bool = True  # simulator weights in NF4 (--simulator-4bit); False: bf16 (the transformers default)

    @property
    def rollouts(self) -> int:
        return self.questions * self.group_size

    @property
    def generate_rows(self) -> int:
        return min(self.rollout_chunk or self.rollouts, self.rollouts)


@dataclass
class Estimate:
    phase: str
    config: str
    parts: dict[str, float] = field(default_factory=dict)  # bytes by component (the COLUMNS)
    working_kind: str = ""  # what the peak working set is made of

    @property
    def total(self) -> float:
        return sum(self.parts.values())


# ---------------------------------------------------------------------------------------------- estimate


def weight_bytes(arch: Arch, float_bytes: int) -> float:
    """NF4 linear weights (double quantization) plus the unquantized ones at `float_bytes` each."""
    return arch.linear_params() * NF4_BYTES_PER_PARAM + arch.unquantized_params() * float_bytes


def lora_bytes(arch: Arch, r: int, *, grads: bool) -> float:
    """fp32 LoRA weights, fp32 gradients while they exist, 8-bit AdamW moments (2 bytes a parameter)."""
    return arch.lora_params(r) * (4 + (4 if grads else 0) + 2)


def block_backward_bytes_per_token(arch: Arch, stream: int, dropout: bool) -> float:
    """One checkpointed block re-run inside backward: what its forward saves plus the gradients alive.

    `stream` is the residual stream's bytes: 2 as `load_base` leaves it, 4 when the unquantized weights are
    fp32 (peft's `prepare_model_for_kbit_training` alone), which makes every 4-bit layer return fp32. The
    4-bit matmuls save no inputs; LoRA (fp32 weights) saves its input as fp32, a copy (plus a 1-byte mask)
    unless the input already is fp32 and there is no dropout. RMSNorm saves its input as fp32 whatever
    the stream.
    """
    h, i, q, kv = arch.hidden, arch.intermediate, arch.q_out, arch.kv_out
    attention = stream * (7 * h + 5 * q + 2 * kv)  # norms, q/k/v before and after rope, sdpa output, residual
    norms = (4 - stream) * 2 * h  # the fp32 copy each of the two norms keeps in a bf16 stream
    mlp = stream * 3 * i  # gate, up, act(gate)
    lora = ((4 if dropout or stream != 4 else 0) + (1 if dropout else 0)) * (6 * h + i)
    gradients = stream * (i + 2 * h)
    return attention + norms + mlp + lora + gradients


def prefill_bytes_per_token(arch: Arch, stream: int) -> float:
    """No-grad forward working set of one block, at the up projection's LoRA: act(gate) and the 4-bit
    layer's output in the stream's dtype, LoRA's fp32 output and its scaled copy, the fp32 copy of LoRA's
    input in a bf16 stream, and the residual, norm and attention tensors."""
    h, i = arch.hidden, arch.intermediate
    lora_input = 4 * h if stream != 4 else 0
    return (2 * stream + 8) * i + stream * (4 * h + arch.q_out + 2 * arch.kv_out) + lora_input


def train_bytes(arch: Arch, rows: int, length: int, stream: int, *, logit_positions: int, dropout: bool
                ) -> tuple[float, float, str]:
    """(saved, working, kind) of a forward/backward with checkpointing: saved = each block's input and the
    final hidden states; working = the larger of the logits' (logits, log-softmax, two gradients, fp32)
    and one block's re-run, which come one after the other in the backward."""
    tokens = rows * length
    saved = tokens * arch.hidden * stream * (arch.layers + 3)
    logits = 12 * rows * logit_positions * arch.vocab
    block = tokens * block_backward_bytes_per_token(arch, stream, dropout)
    return saved, max(logits, block), ("logits" if logits >= block else "block backward")


def overhead(parts: dict[str, float]) -> float:
    return CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * (parts["saved"] + parts["working"])


def make(phase: str, config: str, fixed: dict[str, float], saved: float, working: float, kind: str) -> Estimate:
    parts = {**fixed, "saved": saved, "working": working}
    parts["overhead"] = overhead(parts)
    return Estimate(phase, config, parts, kind)


def estimate_sft(arch: Arch, plan: SFTPlan, stream: int) -> Estimate:
    """SFT micro-batch: the model's own loss, so logits for every position; checkpointed blocks."""
    saved, working, kind = train_bytes(arch, plan.batch_size, plan.max_length, stream,
                                       logit_positions=plan.max_length, dropout=plan.lora_dropout > 0)
    fixed = {"weights": weight_bytes(arch, stream), "lora+optim": lora_bytes(arch, plan.lora_r, grads=True)}
    config = f"batch {plan.batch_size} x {plan.max_length} tok, accum {plan.grad_accum}, r {plan.lora_r}"
    return make("sim SFT", config, fixed, saved, working, kind)


def resident(arch: Arch, plan: GRPOPlan, stream: int, *, grads: bool) -> dict[str, float]:
    """Policy (NF4, floats per `stream`) and simulator (NF4 with bf16 floats, or all bf16), LoRA state."""
    simulator = weight_bytes(arch, 2) if plan.sim_nf4 else 2 * (arch.linear_params() + arch.unquantized_params())
    return {"weights": weight_bytes(arch, stream) + simulator, "lora+optim": lora_bytes(arch, plan.lora_r, grads=grads)}


def estimate_rollout(arch: Arch, plan: GRPOPlan, stream: int) -> Estimate:
    """The worst of three moments: the policy's last-turn prefill (longest prompt), the end of its decode
    (longest KV cache), and the simulator's batched generate, which runs after the policy's."""
    rows, sim_rows = plan.generate_rows, plan.rollouts  # worst case for the simulator: no cache hits
    width = plan.max_context - plan.max_tokens_per_turn
    moments = [  # (saved = KV cache, working set, kind)
        (rows * width * arch.kv_bytes_per_token(stream),
         rows * width * (prefill_bytes_per_token(arch, stream) + width), "policy prefill"),  # + bool 4-D mask
        (rows * plan.max_context * arch.kv_bytes_per_token(stream), rows * arch.vocab * 16, "policy decode"),
        (sim_rows * (plan.sim_prompt + plan.sim_new) * arch.kv_bytes_per_token(2),
         sim_rows * plan.sim_prompt * prefill_bytes_per_token(arch, 2), "simulator"),
    ]
    kv, working, kind = max(moments, key=lambda m: m[0] + m[1])
    config = (f"{plan.questions} q x G {plan.group_size}, {rows} rows/generate, context {plan.max_context}, "
              f"sim {'NF4' if plan.sim_nf4 else 'bf16'} {sim_rows} x {plan.sim_prompt}+{plan.sim_new}")
    return make("GRPO rollout", config, resident(arch, plan, stream, grads=False), kv, working, kind)


def estimate_update(arch: Arch, plan: GRPOPlan, stream: int) -> Estimate:
    """One micro-batch forward/backward at full context; logits only `logprob_chunk` positions at a time."""
    saved, working, kind = train_bytes(arch, plan.micro_batch, plan.max_context, stream,
                                       logit_positions=plan.logprob_chunk, dropout=plan.lora_dropout > 0)
    config = (f"micro {plan.micro_batch} x {plan.max_context} tok, chunk {plan.logprob_chunk}, "
              f"{math.ceil(plan.rollouts / plan.micro_batch)} micro-batches")
    return make("GRPO update", config, resident(arch, plan, stream, grads=True), saved, working, kind)


def estimate_all(arch: Arch, sft: SFTPlan, grpo: GRPOPlan, stream: int) -> list[Estimate]:
    return [estimate_sft(arch, sft, stream), estimate_rollout(arch, grpo, stream), estimate_update(arch, grpo, stream)]


# ---------------------------------------------------------------------------------------------- measure


@dataclass
class Measured:
    phase: str
    status: str  # ok, or the first line of the error (an OOM included)
    seconds: float
    peak_allocated: float
    peak_reserved: float
    outside_torch: float  # device memory in use that PyTorch did not allocate (context, paged optimizer)

    @property
    def device_peak(self) -> float:
        return self.peak_reserved + self.outside_torch


@contextmanager
def measured_phase(name: str, results: list[Measured]) -> Iterator[None]:
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started, status = time.perf_counter(), "ok"
    try:
        yield
    except torch.OutOfMemoryError as exc:
        status = "OOM: " + str(exc).strip().splitlines()[0][:120]
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    results.append(Measured(name, status, time.perf_counter() - started, torch.cuda.max_memory_allocated(),
                            torch.cuda.max_memory_reserved(), (total - free) - torch.cuda.memory_reserved()))


def hf_config(arch: Arch):
    from transformers import AutoConfig

    extra = {"attention_bias": False} if arch.model_type == "llama" else {}
    return AutoConfig.for_model(
        arch.model_type, hidden_size=arch.hidden, num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads, head_dim=arch.head_dim, intermediate_size=arch.intermediate,
        vocab_size=arch.vocab, tie_word_embeddings=arch.tied, max_position_embeddings=32768,
        rope_theta=arch.rope_theta, bos_token_id=arch.bos, eos_token_id=arch.eos,
        rms_norm_eps=1e-6, **extra,
    )


def word_tokenizer(arch: Arch):
    """A word-level tokenizer of `arch`'s vocabulary size, with its BOS and EOS ids, for the simulator
    backend to load alongside the weights; it only has to load: the measurement feeds random token ids
    and never encodes or decodes text."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(arch.vocab)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="t0", bos_token=f"t{arch.bos}",
                                   eos_token=f"t{arch.eos}", pad_token=f"t{arch.eos}")


def random_checkpoint(arch: Arch, folder: Path, device: str = "cuda") -> Path:
    """A random-weight bf16 model of `arch` and its tokenizer, saved as a model folder (reused when the
    folder already holds one)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tokenizer.json").is_file():
        word_tokenizer(arch).save_pretrained(str(folder))
    if (folder / "config.json").is_file():
        return folder
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=torch.bfloat16)
    model.save_pretrained(str(folder))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return folder


def load_simulator(folder: Path, grpo: GRPOPlan):
    """The simulator as `zsl train grpo --simulator-backend transformers [--simulator-4bit]` loads it (the
    backend options of `train_lite.grpo.build_trainer`); its model, in eval mode, is what generates."""
    from zerosearch_lite.models.loading import load_backend

    options = {"load_in_4bit": True} if grpo.sim_nf4 else {}
    return load_backend(str(folder), "transformers", **options).model


def load_policy(folder: Path, arch: Arch, r: int, dropout: float, stream: int):
    """The project's training load (NF4, checkpointing, bf16 stream, LoRA) and its 8-bit paged AdamW.

    `load_base` keeps the residual stream bf16 (it casts back what peft's `prepare_model_for_kbit_training`
    upcast); with `stream` 4 the float weights go to fp32 again, as that peft call leaves them, to measure
    the fp32 stream for comparison."""
    import torch

    from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora, load_base
    from zerosearch_lite.train_lite.sft import make_optimizer

    base = load_base(str(folder), load_in_4bit=True, gradient_checkpointing=True)
    if stream == 4:  # embeddings, norms and biases as peft's prepare_model_for_kbit_training casts them
        for param in base.parameters():
            if param.dtype == torch.bfloat16:
                param.data = param.data.to(torch.float32)
    model = add_lora(base, LoraSettings(r=r, alpha=2 * r, dropout=dropout))
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], 1e-5, paged=True)
    return model, optimizer


def random_ids(arch: Arch, rows: int, width: int, *, ragged: bool, device: str = "cuda"):
    """Left-padded random token ids; with `ragged`, rows lose 0, 1/8, 2/8 or 3/8 of `width` to padding."""
    import torch

    ids = torch.randint(3, arch.vocab - 3, (rows, width), device=device)
    mask = torch.ones_like(ids)
    if ragged:
        for row in range(1, rows):
            mask[row, : int(width * 0.5 * (row % 4) / 4)] = 0
        ids[mask == 0] = arch.bos
    return ids, mask


def generate(model, arch: Arch, rows: int, width: int, new: int) -> None:
    import torch

    ids, mask = random_ids(arch, rows, width, ragged=True, device=str(model.device))
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=True,
                       temperature=1.0, top_p=1.0, use_cache=True, pad_token_id=arch.bos)


def sft_step(model, optimizer, arch: Arch, plan: SFTPlan) -> None:
    """One optimizer step of `train_sft`: grad_accum micro-batches through the model's own loss."""
    import torch

    model.train()
    for _ in range(plan.grad_accum):
        ids, mask = random_ids(arch, plan.batch_size, plan.max_length, ragged=False, device=str(model.device))
        labels = ids.clone()
        labels[:, : plan.max_length // 3] = -100  # the prompt carries no loss
        (model(input_ids=ids, attention_mask=mask, labels=labels).loss / plan.grad_accum).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def rollout_turn(model, simulator, arch: Arch, plan: GRPOPlan, results: list[Measured]) -> None:
    """The last (longest) policy turn of a rollout batch, then one batched simulator call."""
    model.eval()
    with measured_phase("GRPO rollout: policy last turn", results):
        rows, width = plan.generate_rows, plan.max_context - plan.max_tokens_per_turn
        for start in range(0, plan.rollouts, rows):
            generate(model, arch, min(rows, plan.rollouts - start), width, plan.max_tokens_per_turn)
    with measured_phase("GRPO rollout: simulator", results):
        generate(simulator, arch, plan.rollouts, plan.sim_prompt, plan.sim_new)


def grpo_update(model, optimizer, arch: Arch, plan: GRPOPlan) -> None:
    """The trainer's update: reference log-probs with the adapter off, then micro-batch loss and backward."""
    import torch

    from zerosearch_lite.train_lite.grpo_loss import grpo_loss, token_logprobs

    batches = [random_ids(arch, min(plan.micro_batch, plan.rollouts - s), plan.max_context, ragged=False,
                          device=str(model.device)) for s in range(0, plan.rollouts, plan.micro_batch)]
    refs = []
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        for ids, mask in batches:
            refs.append(token_logprobs(model, ids, mask, chunk=plan.logprob_chunk))
    model.train()
    total = sum(ids.shape[0] * (ids.shape[1] - 1) for ids, _ in batches) // 3
    for (ids, mask), ref in zip(batches, refs, strict=True):
        loss_mask = torch.zeros_like(ids[:, 1:])
        loss_mask[:, ::3] = 1  # about the share of policy-written tokens in a transcript
        advantages = torch.randn(ids.shape[0], device=ids.device)
        logp = token_logprobs(model, ids, mask, chunk=plan.logprob_chunk)
        loss, _ = grpo_loss(logp, logp.detach(), ref, advantages, loss_mask, clip_eps=0.2, kl_beta=0.001,
                            total_tokens=total)
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(arch: Arch, sft: SFTPlan, grpo: GRPOPlan, folder: Path, stream: int, phases: list[str]) -> list[Measured]:
    """Each job loads its own policy (SFT's LoRA has dropout, GRPO's has none); the simulator joins GRPO."""
    import gc

    import torch

    results: list[Measured] = []
    if "sft" in phases:
        with measured_phase("sim SFT: load (NF4 + LoRA + optimizer)", results):
            model, optimizer = load_policy(folder, arch, sft.lora_r, sft.lora_dropout, stream)
        with measured_phase("sim SFT: optimizer step", results):
            sft_step(model, optimizer, arch, sft)
        del model, optimizer
        gc.collect()
        torch.cuda.empty_cache()
    if "grpo" in phases:
        with measured_phase("GRPO: load policy and simulator", results):
            model, optimizer = load_policy(folder, arch, grpo.lora_r, grpo.lora_dropout, stream)
            simulator = load_simulator(folder, grpo)
        rollout_turn(model, simulator, arch, grpo, results)
        with measured_phase("GRPO update", results):
            grpo_update(model, optimizer, arch, grpo)
    return results


# ---------------------------------------------------------------------------------------------- CPU profile


def cut_down_model(arch: Arch, dropout: float, stream: int = 2):
    """`arch` in bf16 (the residual stream load_base gives), or fp32 with `stream` 4, with its linear layers
    acting like bitsandbytes' 4-bit ones for autograd (the weight is kept, the input is not saved) and
    LoRA (fp32, as peft makes it) on them, running as peft's LoRA layer for 4-bit ones does."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from transformers import AutoModelForCausalLM

    from zerosearch_lite.train_lite.modeling import LoraSettings, add_lora

    class NoInputSaved(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight):
            ctx.save_for_backward(weight)
            return x @ weight.t()

        @staticmethod
        def backward(ctx, grad):
            (weight,) = ctx.saved_tensors
            return grad @ weight, None

    class Like4bit(torch.nn.Linear):
        def forward(self, x):
            out = NoInputSaved.apply(x, self.weight)
            return out if self.bias is None else out + self.bias

    class FlatHead(torch.nn.Linear):
        """The vocabulary projection as one 2-D matmul. A 3-D input that is a strided slice of the hidden
        states (the last position, a chunk of positions) makes `matmul` use `bmm` on the transposed
        weight; the CPU's bf16 `bmm` first copies that weight (vocab x hidden, 0.58 GiB for Qwen2.5-3B),
        CUDA's takes the transposed layout as it is. Flattening keeps the CPU's count to CUDA's."""

        def forward(self, x):
            return torch.nn.functional.linear(x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)

    class LoraLike4bit(LoraLinear):
        """The forward of peft's LoRA layer on a bitsandbytes 4-bit layer (`lora.bnb.Linear4bit`), which
        needs bitsandbytes to import: the base output is cloned and the fp32 LoRA output is cast to its
        dtype before the sum (the generic layer sums in fp32, one more tensor of the output's size)."""

        def forward(self, x, *args, **kwargs):
            if self.disable_adapters:
                return self.base_layer(x, *args, **kwargs)
            result = self.base_layer(x, *args, **kwargs).clone()
            for name in self.active_adapters:
                if name not in self.lora_A:
                    continue
                lora_a, lora_b = self.lora_A[name], self.lora_B[name]
                x_lora = self._cast_input_dtype(x, lora_a.weight.dtype)
                output = lora_b(lora_a(self.lora_dropout[name](x_lora))) * self.scaling[name]
                result = result + output.to(result.dtype)
            return result

    dtype = torch.float32 if stream == 4 else torch.bfloat16
    model = AutoModelForCausalLM.from_config(hf_config(arch), dtype=dtype)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.__class__ = FlatHead if name == "lm_head" else Like4bit
    model.requires_grad_(False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = add_lora(model, LoraSettings(dropout=dropout))
    for module in model.modules():
        if type(module) is LoraLinear:
            module.__class__ = LoraLike4bit
    return model


def profiled_peak(step) -> float:
    """Peak CPU bytes allocated by `step()` above what was live before it (PyTorch's memory timeline)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    return max(totals) - totals[0]


def profile_cpu(arch: Arch, layers: int, tokens: int, chunk: int, stream: int = 2
                ) -> list[tuple[str, float, float]]:
    """(step, profiled peak, estimate) for prefill, SFT and GRPO-update steps of `arch` cut to `layers` blocks,
    one row of `tokens` tokens, residual stream of `stream` bytes: a check of the activation and logits
    accounting without a GPU."""
    import torch

    from zerosearch_lite.train_lite.grpo_loss import token_logprobs

    small = replace(arch, layers=layers)
    model = cut_down_model(small, dropout=0.05, stream=stream)
    ids = torch.randint(3, small.vocab - 3, (1, tokens))
    mask = torch.ones_like(ids)
    lora_grads = 4 * small.lora_params(16)

    def prefill() -> None:
        model.eval()
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)

    def sft() -> None:
        model.train()
        labels = ids.clone()
        labels[:, : tokens // 3] = -100
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()

    def update() -> None:
        model.train()
        (token_logprobs(model, ids, mask, chunk=chunk).sum() * 1e-3).backward()

    def no_dropout() -> None:  # the GRPO trainer's LoRA has none
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    rows = []
    for name, step, positions, dropout in (("prefill (no grad)", prefill, 0, True),
                                           ("SFT forward/backward", sft, tokens, True),
                                           ("GRPO policy forward/backward", update, chunk, False)):
        if not dropout:
            no_dropout()
        peak = profiled_peak(step)
        model.zero_grad(set_to_none=True)
        if positions:
            saved, working, _ = train_bytes(small, 1, tokens, stream, logit_positions=positions, dropout=dropout)
            estimate = saved + working + lora_grads
        else:
            estimate = tokens * (small.kv_bytes_per_token(stream) + prefill_bytes_per_token(small, stream))
        rows.append((name, peak, estimate))
    return rows


# ---------------------------------------------------------------------------------------------- report


def gib(value: float) -> str:
    return f"{value / GIB:.2f}"


COLUMNS = ("weights", "lora+optim", "saved", "working", "overhead")


def estimate_table(arch: Arch, estimates: list[Estimate], stream: int) -> str:
    stream_name = "fp32" if stream == 4 else "bf16"
    title = f"estimated peak, {arch.name}, residual stream {stream_name} (GiB; a 24 GB card holds 24 GiB)"
    lines = [title + ". saved: checkpointed block inputs or the KV cache; working: the largest transient",
             "| phase | config | " + " | ".join(COLUMNS) + " | total | working set is | fits 24 GB |",
             "| --- | --- | " + " | ".join("---:" for _ in COLUMNS) + " | ---: | --- | --- |"]
    for e in estimates:
        cells = " | ".join(gib(e.parts[c]) for c in COLUMNS)
        fits = "yes" if e.total < CARD_BYTES else "no"
        lines.append(f"| {e.phase} | {e.config} | {cells} | {gib(e.total)} | {e.working_kind} | {fits} |")
    return "\n".join(lines)


def measured_table(results: list[Measured], device: str) -> str:
    lines = [f"measured on {device} (GiB; device peak = peak reserved + memory outside PyTorch)",
             "| phase | status | seconds | peak allocated | peak reserved | outside torch | device peak |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in results:
        lines.append(f"| {m.phase} | {m.status} | {m.seconds:.1f} | {gib(m.peak_allocated)} | {gib(m.peak_reserved)} "
                     f"| {gib(m.outside_torch)} | {gib(m.device_peak)} |")
    return "\n".join(lines)


def profile_table(arch: Arch, rows: list[tuple[str, float, float]], layers: int, tokens: int, stream: int
                  ) -> str:
    stream_name = "fp32" if stream == 4 else "bf16"
    title = f"CPU memory profile, {arch.name} cut to {layers} blocks, 1 x {tokens} tokens, {stream_name} stream (MiB)"
    lines = [title,
             "| step | profiled peak | estimate | estimate / profiled |", "| --- | ---: | ---: | ---: |"]
    for name, peak, estimate in rows:
        lines.append(f"| {name} | {peak / 2**20:.0f} | {estimate / 2**20:.0f} | {estimate / max(peak, 1):.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-3b")
    parser.add_argument("--stream", choices=("bf16", "fp32"), default="bf16",
                        help="Residual stream dtype: bf16 is what load_base gives (it casts the weights peft's "
                             "prepare_model_for_kbit_training upcast back to bf16); fp32 is the stream that "
                             "peft call alone leaves, for comparison.")
    sft, grpo = SFTPlan(), GRPOPlan()
    for name, default in (("batch-size", sft.batch_size), ("grad-accum", sft.grad_accum),
                          ("max-length", sft.max_length)):
        parser.add_argument(f"--{name}", type=int, default=default, help=f"SFT (default {default}).")
    for name in ("questions", "group-size", "max-tokens-per-turn", "max-context", "rollout-chunk", "micro-batch",
                 "logprob-chunk", "sim-prompt", "sim-new", "lora-r"):
        default = getattr(grpo, name.replace("-", "_"))
        extra = " Rows per generate call, the trainer's --rollout-batch; 0: all at once." if name == "rollout-chunk" else ""
        parser.add_argument(f"--{name}", type=int, default=default, help=f"GRPO (default {default}).{extra}")
    parser.add_argument("--sim-bf16", action="store_true",
                        help="GRPO: simulator weights in bf16 (the trainer without --simulator-4bit), not NF4.")
    parser.add_argument("--measure", action="store_true", help="Also measure on CUDA with random weights.")
    parser.add_argument("--phases", default="sft,grpo", help="What --measure runs: sft, grpo or both.")
    parser.add_argument("--checkpoint-dir", type=Path, help="Keep (or reuse) the random-weight model here.")
    parser.add_argument("--profile-cpu", action="store_true",
                        help="Also profile prefill/SFT/update steps on the CPU with the model cut to a few blocks.")
    parser.add_argument("--profile-layers", type=int, default=2)
    parser.add_argument("--profile-tokens", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="Also write estimates and measurements to this file.")
    return parser.parse_args(argv)


def plans(args: argparse.Namespace) -> tuple[SFTPlan, GRPOPlan]:
    sft = SFTPlan(batch_size=args.batch_size, grad_accum=args.grad_accum, max_length=args.max_length,
                  lora_r=args.lora_r)
    grpo = replace(GRPOPlan(), sim_nf4=not args.sim_bf16,
                   **{k: getattr(args, k) for k in asdict(GRPOPlan()) if hasattr(args, k)})
    return sft, grpo


def run_measurements(args: argparse.Namespace, arch: Arch, sft: SFTPlan, grpo: GRPOPlan,
                     stream: int) -> tuple[list[Measured], str]:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--measure needs a CUDA GPU (and bitsandbytes, peft); the estimate above needs neither")
    phases = args.phases.split(",")
    unknown = set(phases) - {"sft", "grpo"}
    if unknown:
        raise SystemExit(f"unknown phase {min(unknown)!r}: choose sft, grpo or sft,grpo")
    with tempfile.TemporaryDirectory() as scratch:
        folder = random_checkpoint(arch, args.checkpoint_dir or Path(scratch) / arch.name)
        results = measure(arch, sft, grpo, folder, stream, phases)
    return results, torch.cuda.get_device_name()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    arch = ARCHS[args.arch]
    stream = 4 if args.stream == "fp32" else 2
    sft, grpo = plans(args)
    estimates = estimate_all(arch, sft, grpo, stream)
    print(estimate_table(arch, estimates, stream), flush=True)
    record: dict = {"arch": asdict(arch), "stream": args.stream, "sft": asdict(sft), "grpo": asdict(grpo),
                    "estimates": [{"phase": e.phase, "config": e.config, "total_gib": e.total / GIB,
                                   "working_kind": e.working_kind, **{k: v / GIB for k, v in e.parts.items()}}
                                  for e in estimates]}
    if args.profile_cpu:
        rows = profile_cpu(arch, args.profile_layers, args.profile_tokens, grpo.logprob_chunk, stream)
        print("\n" + profile_table(arch, rows, args.profile_layers, args.profile_tokens, stream), flush=True)
        record["cpu_profile"] = [{"step": n, "profiled_mib": p / 2**20, "estimate_mib": e / 2**20} for n, p, e in rows]
    if args.measure:
        results, device = run_measurements(args, arch, sft, grpo, stream)
        print("\n" + measured_table(results, device), flush=True)
        record["device"] = device
        record["measured"] = [{**asdict(m), "device_peak": m.device_peak} for m in results]
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
