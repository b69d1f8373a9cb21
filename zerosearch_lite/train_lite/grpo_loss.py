"""The GRPO objective: group-normalized advantages, chunked token log-probs, clipped ratio loss with a
KL penalty to the reference policy.

Hand-written rather than TRL's `GRPOTrainer`: our rollouts are multi-turn with environment text between
policy turns (masked per token), and the trainer owns generation, curriculum and query recycling; the
loss itself is a few tensor lines. Log-probs are computed from the decoder's hidden states in chunks of
positions, each chunk's vocabulary-sized logits recomputed in the backward pass (activation
checkpointing), so a batch never holds logits for every position at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def group_advantages(rewards: Sequence[float], group_size: int, *, scale: bool = True, eps: float = 1e-4) -> list[float]:
    """(r - group mean) / (group std + eps) per group of `group_size`; a zero-variance group gets zeros."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    out: list[float] = []
    for start in range(0, len(rewards), group_size):
        group = list(rewards[start : start + group_size])
        mean = sum(group) / len(group)
        if max(group) - min(group) < 1e-9:
            out.extend([0.0] * len(group))
            continue
        std = (sum((r - mean) ** 2 for r in group) / max(len(group) - 1, 1)) ** 0.5
        out.extend((r - mean) / (std + eps) if scale else r - mean for r in group)
    return out


def zero_variance(rewards: Sequence[float]) -> bool:
    return max(rewards) - min(rewards) < 1e-9


def decoder_and_head(model):
    """(decoder, lm_head) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def token_logprobs(model, input_ids, attention_mask, *, chunk: int = 256):
    """log p(input_ids[:, t+1] | input_ids[:, :t+1]) for every position t: a (batch, length - 1) tensor."""
    decoder, lm_head = decoder_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return hidden_logprobs(lm_head, hidden[:, :-1], input_ids[:, 1:], chunk=chunk)


def hidden_logprobs(lm_head, hidden, targets, *, chunk: int = 256):
    """log p(targets) from the hidden states that predict them: (rows, positions, hidden) and (rows,
    positions) give (rows, positions). Logits exist for `chunk` positions of every row at a time, in fp32,
    and with gradients on they are recomputed in the backward instead of kept (activation checkpointing)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    def piece(h, t):
        logits = lm_head(h).float()
        return torch.gather(logits.log_softmax(-1), 2, t.unsqueeze(-1)).squeeze(-1)

    outs = []
    for start in range(0, targets.shape[1], chunk):
        h, t = hidden[:, start : start + chunk], targets[:, start : start + chunk]
        outs.append(checkpoint(piece, h, t, use_reentrant=False) if torch.is_grad_enabled() else piece(h, t))
    return torch.cat(outs, dim=1)


@dataclass
class LossParts:
    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    tokens: int


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, *, clip_eps: float, kl_beta: float, total_tokens: int):
    """Clipped-ratio objective plus beta * KL (k3 estimator), summed over masked tokens / `total_tokens`.

    Dividing by the token count of the whole batch (not of the micro-batch) makes accumulated micro-batch
    gradients equal the full-batch gradient (token-level averaging, as in DAPO).
    Returns the loss tensor and its detached parts.
    """
    import torch

    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    policy_term = -torch.minimum(unclipped, clipped)
    if ref_logp is not None and kl_beta > 0:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
    else:
        kl = torch.zeros_like(logp)
    per_token = policy_term + kl_beta * kl
    denominator = max(total_tokens, 1)
    loss = (per_token * mask).sum() / denominator
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        parts = LossParts(
            loss=float(loss),
            policy_loss=float((policy_term * mask).sum() / denominator),
            kl=float((kl * mask).sum() / n),
            clip_fraction=float((((ratio - 1).abs() > clip_eps).to(mask.dtype) * mask).sum() / n),
            tokens=int(mask.sum()),
        )
    return loss, parts
