"""The 24 GB memory plan's estimator (`train_lite.memory_plan`): byte counts of the 3B and 7B shapes,
monotonicity, the chunked SFT loss, and the recommended configs under the card's size. Pure arithmetic:
no torch, no GPU; the bench script over it runs once as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from zerosearch_lite.train_lite import memory_plan

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "memory_plan.py"


@pytest.fixture(scope="module")
def mp():
    return memory_plan


def test_parameter_counts_match_the_published_models(mp):
    # transformers' own count of a model built from each config (Qwen2.5-3B: 3.09B, Llama-3.2-3B: 3.21B)
    qwen, llama = mp.ARCHS["qwen2.5-3b"], mp.ARCHS["llama-3.2-3b"]
    assert qwen.linear_params() + qwen.unquantized_params() == 3_085_938_688
    assert llama.linear_params() + llama.unquantized_params() == 3_212_749_824
    assert qwen.lora_params(16) == 29_933_568


def test_nf4_weights_of_the_3b_simulator(mp):
    qwen = mp.ARCHS["qwen2.5-3b"]
    nf4_linear = qwen.linear_params() * mp.NF4_BYTES_PER_PARAM / mp.GIB
    assert 1.25 < nf4_linear < 1.40  # 2.77B params at ~4.13 bits
    bf16_total = mp.weight_bytes(qwen, 2) / mp.GIB
    assert 1.85 < bf16_total < 2.0  # plus 311M embedding params kept in bf16
    assert mp.weight_bytes(qwen, 4) - mp.weight_bytes(qwen, 2) == pytest.approx(2 * qwen.unquantized_params())


def test_bf16_stream_costs_less_than_fp32_but_lora_stays_fp32(mp):
    qwen = mp.ARCHS["qwen2.5-3b"]
    for estimate in ("estimate_rollout", "estimate_update"):
        bf16 = getattr(mp, estimate)(qwen, mp.GRPOPlan(), 2).total
        fp32 = getattr(mp, estimate)(qwen, mp.GRPOPlan(), 4).total
        assert bf16 < fp32, estimate
    # LoRA computes in fp32 whatever the stream, so the no-grad working set does not halve
    assert 0.6 < mp.prefill_bytes_per_token(qwen, 2) / mp.prefill_bytes_per_token(qwen, 4) < 0.9


def test_peak_grows_with_batch_length_and_context(mp):
    qwen = mp.ARCHS["qwen2.5-3b"]
    sft = mp.SFTPlan()
    for stream in (2, 4):
        base = mp.estimate_sft(qwen, sft, stream).total
        assert mp.estimate_sft(qwen, replace(sft, batch_size=8), stream).total > base
        assert mp.estimate_sft(qwen, replace(sft, max_length=2048), stream).total > base
        grpo = replace(mp.GRPOPlan(), rollout_chunk=0)  # every rollout in one generate call
        rollout = mp.estimate_rollout(qwen, grpo, stream).total
        assert mp.estimate_rollout(qwen, replace(grpo, questions=16), stream).total > rollout
        assert mp.estimate_rollout(qwen, replace(grpo, max_context=3072), stream).total > rollout
        assert mp.estimate_rollout(qwen, replace(grpo, rollout_chunk=10), stream).total < rollout
        update = mp.estimate_update(qwen, grpo, stream).total
        assert mp.estimate_update(qwen, replace(grpo, max_context=3072), stream).total > update
        assert mp.estimate_update(qwen, replace(grpo, micro_batch=1), stream).total < update


def test_chunked_sft_loss_removes_the_full_logits_from_the_peak(mp):
    qwen = mp.ARCHS["qwen2.5-3b"]
    full = mp.estimate_sft(qwen, replace(mp.SFTPlan(), loss_chunk=0), 2)  # the model's own loss, as before
    assert full.working_kind == "logits"
    logits = 12 * 4 * 1024 * qwen.vocab  # fp32 logits, log-softmax and two gradients for every position
    assert full.parts["working"] == logits
    assert 6.9 < logits / mp.GIB < 7.0 and 11.0 < full.total / mp.GIB < 11.1  # docs/GPU.md before chunking
    chunked = mp.estimate_sft(qwen, mp.SFTPlan(), 2)
    assert mp.SFTPlan().loss_chunk == 512 and chunked.working_kind == "block backward"
    assert chunked.parts["working"] < logits / 6  # what is left of the logits hides under a block's backward
    assert chunked.total < 0.42 * full.total  # 11.06 -> 4.55 GiB
    assert chunked.total < mp.estimate_sft(qwen, replace(mp.SFTPlan(), loss_chunk=2048), 2).total
    update = mp.estimate_update(qwen, mp.GRPOPlan(), 2)
    assert update.working_kind == "block backward"  # GRPO's chunked log-probs: logits not the peak either


def test_freed_memory_fits_larger_sft_batches_and_a_7b_simulator(mp):
    qwen3, qwen7 = mp.ARCHS["qwen2.5-3b"], mp.ARCHS["qwen2.5-7b"]
    # Qwen2.5-7B: 7.6B parameters, 6.53B of them outside the untied embeddings and lm_head (its model card)
    assert round((qwen7.linear_params() + qwen7.unquantized_params()) / 1e9, 2) == 7.62
    assert round((qwen7.linear_params() + qwen7.unquantized_params() - 2 * qwen7.vocab * qwen7.hidden) / 1e9, 2) == 6.53
    assert mp.estimate_sft(qwen3, replace(mp.SFTPlan(), batch_size=16, grad_accum=1), 2).total < 10.5 * mp.GIB
    assert mp.estimate_sft(qwen3, replace(mp.SFTPlan(), batch_size=1, grad_accum=16, loss_chunk=128), 2).total \
        < 3.5 * mp.GIB  # Unsloth's 3B QLoRA class
    assert mp.estimate_sft(qwen7, mp.SFTPlan(), 2).total < 16 * mp.GIB  # a 7B simulator's SFT on a 16 GB card
    assert mp.estimate_sft(qwen7, replace(mp.SFTPlan(), loss_chunk=0), 2).total > 14 * mp.GIB


def test_recommended_24gb_configs_fit(mp):
    qwen = mp.ARCHS["qwen2.5-3b"]
    planned = mp.GRPOPlan()  # 8 questions x G 5, 20 rows per generate call (--rollout-batch), --simulator-4bit
    plain = replace(planned, questions=4, rollout_chunk=0, sim_nf4=False)  # without those two options
    for stream in (2, 4):  # bf16: load_base as it is; fp32: the stream before it cast back
        for grpo in (planned, plain):
            for estimate in mp.estimate_all(qwen, mp.SFTPlan(), grpo, stream):
                assert estimate.total < 22 * mp.GIB, (stream, estimate.phase, estimate.config, estimate.total / mp.GIB)
    # 8 x 5 with all 40 rows in one generate call and a bf16 simulator: too close to the card in bf16,
    # over it in fp32
    everything = replace(planned, rollout_chunk=0, sim_nf4=False)
    assert mp.estimate_rollout(qwen, everything, 2).total > 22 * mp.GIB
    assert mp.estimate_rollout(qwen, everything, 4).total > mp.CARD_BYTES


def test_bench_script_prints_the_table_without_cuda():
    done = subprocess.run([sys.executable, str(SCRIPT), "--arch", "llama-3.2-3b", "--max-context", "3072",
                           "--micro-batch", "2", "--loss-chunk", "256"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "llama-3.2-3b" in out and "GRPO rollout" in out and "micro 2 x 3072" in out and "loss chunk 256" in out
    assert "residual stream bf16" in out  # the default stream, as load_base leaves it
