"""Checkpoints that an interruption cannot corrupt: adapter, optimizer, RNG states, step and any extra
state (data order, recycle pool), written to a temporary folder and swapped in by rename."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

CHECKPOINT = "checkpoint"


def save_checkpoint(run_dir: str | Path, model, optimizer, step: int, extra: dict | None = None) -> Path:
    import numpy as np
    import torch

    run_dir = Path(run_dir)
    final, tmp, old = run_dir / CHECKPOINT, run_dir / f"{CHECKPOINT}.tmp", run_dir / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "adapter"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        },
        tmp / "trainer_state.pt",
    )
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    return swap_in(tmp, final, old)


def swap_in(staging: Path, final: Path, aside: Path) -> Path:
    """Rename the finished folder `staging` to `final`. The previous `final` waits at `aside` until the new one
    is in place, so a kill between the two renames leaves one whole copy (at `aside`: readers fall back to it)."""
    if final.exists():
        shutil.rmtree(aside, ignore_errors=True)
        final.rename(aside)
    staging.rename(final)
    shutil.rmtree(aside, ignore_errors=True)
    return final


def find_checkpoint(run_dir: str | Path) -> Path | None:
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):  # .old survives a kill between the two renames
        path = run_dir / name
        if (path / "state.json").is_file() and (path / "trainer_state.pt").is_file():
            return path
    return None


def load_checkpoint(path: Path, optimizer) -> dict:
    """Restore optimizer and RNG states; returns state.json (step and extra). The adapter is loaded by the caller."""
    import numpy as np
    import torch

    state = torch.load(path / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    return json.loads((path / "state.json").read_text())
