"""CLI group `zsl train`: GRPO of the policy (`grpo`, with `--resume RUN_DIR`) and a run's metrics (`show`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..config_cli import config_command
from ..console import err, out, progress_bar
from ..errors import ZslError
from .grpo_config import GRPOConfig

# Not options of `train grpo`: the trained adapter starts fresh, rollouts run on the trainer's own model, each
# step seeds its own sampling, and searches draw useful/noisy from the curriculum.
GRPO_EXCLUDED = ("policy.adapter", "policy.backend", "agent.seed", "agent.search_mode")

train_app = typer.Typer(help="Train the search policy with curriculum GRPO against the simulated engine.",
                        no_args_is_help=True)


def _saved_run(own: dict) -> Path | None:
    resume = own.get("resume")
    if resume is None:
        return None
    from .grpo import CONFIG_FILE

    path = Path(resume) / CONFIG_FILE
    if not path.is_file():
        raise ZslError(f"not a GRPO run directory (no {CONFIG_FILE}): {resume}")
    return path


@train_app.command("grpo")
@config_command(GRPOConfig, exclude=GRPO_EXCLUDED, saved_config=_saved_run)
def grpo_command(
    config: GRPOConfig,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory with its own settings.")] = None,
) -> None:
    """GRPO of the policy: noise curriculum, masked <information> tokens, zero-variance query recycling."""
    from .grpo import build_trainer

    # A resumed run continues where it lies now, even if it was moved or copied after it started (its saved
    # `out` names where it started, and writing there would overwrite the original).
    cfg = config if resume is None else config.model_copy(update={"out": str(resume)})
    err.print(f"loading policy {escape(cfg.policy.name)} and the {cfg.engine.kind} engine …")
    trainer = build_trainer(cfg, resume=resume is not None)
    trainer.on_warning = lambda text: err.print(f"[yellow]warning:[/] {escape(text)}")
    if trainer.step:
        err.print(f"resuming {escape(cfg.out)} at step {trainer.step}/{cfg.steps}")
    with progress_bar() as progress:
        task = progress.add_task("grpo", total=cfg.steps, completed=trainer.step, info="rolling out")

        def update(row) -> None:
            hit = "-" if row.cache_hit_rate is None else f"{row.cache_hit_rate:.0%}"
            kl = "- (no update)" if row.kl is None else f"{row.kl:.4f}"
            held = "" if row.heldout_f1 is None else f" · held-out F1 {row.heldout_f1:.3f}"
            progress.update(task, completed=row.step, info=(
                f"reward {row.reward_mean:.3f} · noise p {row.noise_p:.2f} · kl {kl} · "
                f"pool {row.pool_size} ({row.pool_share:.0%} of batch) · cache {hit}{held} · "
                f"rollout {row.rollout_seconds:.0f}s update {row.update_seconds:.0f}s"))

        try:
            trainer.train(on_step=update)
        except KeyboardInterrupt:
            err.print(f"interrupted: checkpoint saved at step {trainer.step}; "
                      f"continue with `zsl train grpo --resume {cfg.out}`")
            raise typer.Exit(130) from None
    best = Path(cfg.out) / "best"
    out.print(f"adapter: {Path(cfg.out) / 'adapter'}  ·  metrics: {Path(cfg.out) / 'metrics.db'}"
              + (f"  ·  best held-out: {best}" if best.is_dir() else ""))


@train_app.command("show")
def show_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    last: Annotated[int, typer.Option(min=1, help="Show the last N steps.")] = 20,
    api_price: Annotated[float, typer.Option(
        min=0.0, help="Price of a real search API in USD per 1,000 queries, for the cost the run avoided "
        "(default: Google's Custom Search JSON API, $5).")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="All rows as JSON lines.")] = False,
) -> None:
    """A run's metrics table (one row per step) and its totals: searches, cache hits, simulator cost."""
    from rich import box
    from rich.table import Table

    from .metrics import METRICS_FILE, read_metrics, run_totals

    if not run_dir.is_dir():
        raise ZslError(f"run directory not found: {run_dir}")
    if not (run_dir / METRICS_FILE).is_file():  # a GRPO run writes it when it starts, before its first step
        raise ZslError(f"not a GRPO run directory (no {METRICS_FILE}): {run_dir}")
    rows = read_metrics(run_dir)
    if as_json:
        for row in rows:  # one JSON object a line, never wrapped or indented
            typer.echo(row.model_dump_json())
        return
    columns = {"step": "step", "reward_mean": "reward", "noise_p": "noise", "noisy_share": "noisy",
               "guarded_documents": "guarded", "kl": "kl",
               "clip_fraction": "clip", "loss": "loss", "searches_per_question": "srch",
               "zero_variance_groups": "flat", "pool_size": "pool", "pool_share": "pool%", "recovered": "recov",
               "cache_hit_rate": "cache", "heldout_f1": "held F1", "rollout_seconds": "roll s",
               "update_seconds": "upd s"}
    if not _used_guard(run_dir, rows):
        del columns["guarded_documents"]
    table = Table(title=f"{run_dir} · {len(rows)} steps", box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows[-last:]:
        values = row.model_dump()
        table.add_row(*(_cell(values[c]) for c in columns))
    out.print(table)
    totals = run_totals(rows)
    if totals.searches:
        out.print(
            f"{totals.searches} searches over {len(rows)} steps: {totals.cache_hits} cache hits, "
            f"{totals.searches - totals.cache_hits} sent to the engine · simulator: {totals.simulator_tokens} "
            f"tokens in {totals.search_seconds:.0f} s · a search API at ${api_price:g} per 1k queries would have "
            f"cost ${totals.searches * api_price / 1000:.2f}"
            + (f" · {totals.guarded_documents} documents guarded ({totals.guard_retries} regenerations in "
               f"{totals.guard_seconds:.0f} s, {totals.guard_dropped} dropped)" if totals.guarded_documents else "")
        )
    for row in rows:
        if row.warning:
            err.print(f"[yellow]step {row.step}:[/] {escape(row.warning)}")


def _used_guard(run_dir: Path, rows) -> bool:
    """Whether the run searched with the noise guard on: its config says so (a simulated engine, `self`
    included, with a guard other than off), or a step caught documents."""
    from .grpo import load_run_config

    if any(row.guarded_documents for row in rows):
        return True
    try:
        engine = load_run_config(run_dir).engine
    except ZslError:  # no config, or one this version cannot read: only the rows can tell
        return False
    return engine.kind in ("simulated", "self") and engine.guard != "off"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1e}" if 0 < abs(value) < 0.01 else f"{value:.2f}"
    return str(value)
