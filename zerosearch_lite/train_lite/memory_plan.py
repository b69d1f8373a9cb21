"""GPU memory plan: an analytic estimate of the peak memory of simulator SFT (`zsl sim sft`) and of a GRPO
step (`zsl train grpo`, policy and simulator in one process) on one card, from model shapes alone.

It counts NF4 weights with their quantization constants, the weights bitsandbytes leaves in float
(embeddings, norms, biases), LoRA weights, gradients and 8-bit AdamW states, checkpointed block inputs,
the larger of the vocabulary logits (a chunk of positions: both trainers compute log-probs in chunks) and
one block's backward, the KV cache and prefill working set of `generate`, and CUDA context plus allocator
slack. The residual stream is bf16 by default, as `train_lite.modeling.load_base` leaves it. Pure
arithmetic: no torch, no GPU, nothing downloaded; `memory_measure` checks it on a GPU or the CPU, and
`bench/memory_plan.py` is the command line over both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
    # What the chunked SFT loss frees room for: a 7B simulator (untied embeddings) on a 24 GB card.
    "qwen2.5-7b": Arch("qwen2.5-7b", "qwen2", 3584, 28, 28, 4, 128, 18944, 152064, False, True,
                       151643, 151645, 1_000_000.0),
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
    loss_chunk: int = 512  # response tokens projected to the vocabulary at once (SFTConfig.loss_chunk);
    # 0: every position at once, as the model's own full-logit loss did before the loss was chunked


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


def train_bytes(arch: Arch, rows: int, length: int, stream: int, *, logit_tokens: int, dropout: bool
                ) -> tuple[float, float, str]:
    """(saved, working, kind) of a forward/backward with checkpointing: saved = each block's input and the
    final hidden states; working = the larger of the logits' (logits, log-softmax, two gradients, fp32)
    and one block's re-run, which come one after the other in the backward."""
    tokens = rows * length
    saved = tokens * arch.hidden * stream * (arch.layers + 3)
    logits = 12 * logit_tokens * arch.vocab
    block = tokens * block_backward_bytes_per_token(arch, stream, dropout)
    return saved, max(logits, block), ("logits" if logits >= block else "block backward")


def overhead(parts: dict[str, float]) -> float:
    return CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * (parts["saved"] + parts["working"])


def make(phase: str, config: str, fixed: dict[str, float], saved: float, working: float, kind: str) -> Estimate:
    parts = {**fixed, "saved": saved, "working": working}
    parts["overhead"] = overhead(parts)
    return Estimate(phase, config, parts, kind)


def estimate_sft(arch: Arch, plan: SFTPlan, stream: int) -> Estimate:
    """SFT micro-batch, checkpointed blocks; the loss projects `loss_chunk` response tokens to the
    vocabulary at a time (worst case: every token a response token), or with `loss_chunk` 0 every position
    of the micro-batch at once, as the model's own loss did."""
    tokens = plan.batch_size * plan.max_length
    logit_tokens = min(plan.loss_chunk, tokens) if plan.loss_chunk else tokens
    saved, working, kind = train_bytes(arch, plan.batch_size, plan.max_length, stream,
                                       logit_tokens=logit_tokens, dropout=plan.lora_dropout > 0)
    fixed = {"weights": weight_bytes(arch, stream), "lora+optim": lora_bytes(arch, plan.lora_r, grads=True)}
    loss = f"loss chunk {plan.loss_chunk}" if plan.loss_chunk else "full logits"
    config = f"batch {plan.batch_size} x {plan.max_length} tok, accum {plan.grad_accum}, r {plan.lora_r}, {loss}"
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
    logit_tokens = plan.micro_batch * min(plan.logprob_chunk, plan.max_context)
    saved, working, kind = train_bytes(arch, plan.micro_batch, plan.max_context, stream,
                                       logit_tokens=logit_tokens, dropout=plan.lora_dropout > 0)
    config = (f"micro {plan.micro_batch} x {plan.max_context} tok, chunk {plan.logprob_chunk}, "
              f"{math.ceil(plan.rollouts / plan.micro_batch)} micro-batches")
    return make("GRPO update", config, resident(arch, plan, stream, grads=True), saved, working, kind)


def estimate_all(arch: Arch, sft: SFTPlan, grpo: GRPOPlan, stream: int) -> list[Estimate]:
    return [estimate_sft(arch, sft, stream), estimate_rollout(arch, grpo, stream), estimate_update(arch, grpo, stream)]


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
