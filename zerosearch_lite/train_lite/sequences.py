"""Training sequences from trajectories: token ids and the loss mask GRPO trains on.

Token-out: a generated segment keeps the ids the policy sampled (`Segment.token_ids`), and those are what
is trained on; only environment text without ids (a backend that gave none) is tokenized here, one segment
at a time, so no token straddles a policy/environment boundary. Mask: 1 on policy-generated segments, 0 on
everything the environment wrote (the chat prompt, <information> blocks, retry hints).
"""

from __future__ import annotations

from ..agent.types import Segment
from ..models.hf import token_ids


def tokenize_trajectory(tokenizer, segments: list[Segment], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of a transcript and its loss mask (1 = policy-generated), cut at `max_length` tokens."""
    ids: list[int] = []
    mask: list[int] = []
    for i, segment in enumerate(segments):
        piece = segment.token_ids
        if piece is None:
            piece = token_ids(tokenizer, segment.text, starts_sequence=i == 0)
        ids.extend(piece)
        mask.extend([int(segment.generated)] * len(piece))
    return ids[:max_length], mask[:max_length]
