"""CLI group `zsl train`: GRPO of the policy (`grpo`, with `--resume RUN_DIR`) and a run's metrics (`show`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..console import err, out
from ..errors import ZslError
from .commands import _progress

train_app = typer.Typer(help="Train the search policy with curriculum GRPO against the simulated engine.",
                        no_args_is_help=True)


@train_app.command("grpo")
def grpo_command(
    data: Annotated[Path | None, typer.Option("--data", help="QA JSONL/parquet with question + golden_answers.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="New run directory.")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory (its config is used).")] = None,
    policy: Annotated[str, typer.Option(help="Policy base model.")] = "embedded",
    engine: Annotated[str, typer.Option(
        help="simulated, corpus, http, or template (no model: useful documents state the gold answer).")] = "simulated",
    simulator: Annotated[str, typer.Option(help="Simulator model (merged GGUF/folder, name or hub id).")] = "embedded",
    simulator_backend: Annotated[str, typer.Option(help="auto, llama.cpp, transformers or openai.")] = "auto",
    simulator_adapter: Annotated[str | None, typer.Option(help="peft adapter of the simulator.")] = None,
    simulator_4bit: Annotated[bool, typer.Option("--simulator-4bit", help="NF4 simulator (transformers, CUDA).")] = False,
    corpus: Annotated[str | None, typer.Option(help="JSONL corpus for --engine corpus.")] = None,
    url: Annotated[str | None, typer.Option(help="/retrieve URL for --engine http.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use the first N questions.")] = None,
    steps: Annotated[int, typer.Option(min=1, help="Total steps (the curriculum's length).")] = 20,
    batch_questions: Annotated[int, typer.Option(min=1, help="Questions per step.")] = 2,
    group_size: Annotated[int, typer.Option("--group-size", "-G", min=2, help="Rollouts per question.")] = 5,
    max_turns: Annotated[int, typer.Option(min=1)] = 3,
    max_tokens_per_turn: Annotated[int, typer.Option(min=8)] = 96,
    max_context: Annotated[int, typer.Option(min=256)] = 2048,
    k: Annotated[int, typer.Option("-k", min=1, max=20, help="Documents per search.")] = 3,
    temperature: float = 1.0,
    grammar: Annotated[str, typer.Option(help="Protocol-constrained rollouts: auto (on for the embedded model), on, off.")] = "auto",
    reward: Annotated[str, typer.Option(help="f1 or em.")] = "f1",
    lr: float = 1e-5,
    kl_beta: float = 0.001,
    clip_eps: float = 0.2,
    updates_per_batch: Annotated[int, typer.Option(min=1)] = 1,
    micro_batch: Annotated[int, typer.Option(min=1, help="Trajectories per forward/backward pass.")] = 4,
    rollout_batch: Annotated[int | None, typer.Option(min=1, help="Rows per generate call (caps rollout memory).")] = None,
    p_start: Annotated[float, typer.Option(help="Curriculum: noise probability at step 0.")] = 0.0,
    p_end: Annotated[float, typer.Option(help="Curriculum: noise probability at the last step.")] = 0.5,
    base: Annotated[float, typer.Option(help="Curriculum: exponential base b.")] = 4.0,
    zero_variance: Annotated[str, typer.Option(help="recycle, filter or keep.")] = "recycle",
    recycle_share: Annotated[float, typer.Option(help="Largest share of a batch taken from the recycle pool.")] = 0.5,
    lora_r: int = 16,
    load_in_4bit: Annotated[bool | None, typer.Option("--load-in-4bit/--no-4bit", help="NF4 base (CUDA).")] = None,
    save_every: Annotated[int, typer.Option(min=1)] = 5,
    seed: int = 0,
) -> None:
    """GRPO of the policy: noise curriculum, masked <information> tokens, zero-variance query recycling."""
    from pydantic import ValidationError

    from ..agent.config import AgentConfig
    from .curriculum import Curriculum
    from .grpo import GRPOConfig, build_trainer, load_run_config

    if resume is not None:
        cfg = load_run_config(resume)
    else:
        if data is None or out_dir is None:
            raise ZslError("give --data and --out for a new run, or --resume RUN_DIR")
        try:
            cfg = GRPOConfig(
                data=str(data), out=str(out_dir), policy=policy, engine=engine, simulator=simulator,  # type: ignore[arg-type]
                simulator_backend=simulator_backend, simulator_adapter=simulator_adapter,
                simulator_load_in_4bit=simulator_4bit, corpus=corpus, url=url, rollout_batch=rollout_batch,
                limit=limit, steps=steps, batch_questions=batch_questions, group_size=group_size,
                agent=AgentConfig(max_turns=max_turns, max_tokens_per_turn=max_tokens_per_turn,
                                  max_context=max_context, k=k, temperature=temperature, top_p=1.0,
                                  grammar=grammar),  # type: ignore[arg-type]
                reward=reward, lr=lr, kl_beta=kl_beta, clip_eps=clip_eps,  # type: ignore[arg-type]
                updates_per_batch=updates_per_batch, micro_batch=micro_batch,
                curriculum=Curriculum(p_start=p_start, p_end=p_end, base=base),
                zero_variance=zero_variance, recycle_share=recycle_share,  # type: ignore[arg-type]
                lora_r=lora_r, lora_alpha=2 * lora_r, load_in_4bit=load_in_4bit, save_every=save_every, seed=seed,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ZslError(f"invalid option {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    err.print(f"loading policy {escape(cfg.policy)} and the {cfg.engine} engine …")
    trainer = build_trainer(cfg, resume=resume is not None)
    if trainer.step:
        err.print(f"resuming {escape(cfg.out)} at step {trainer.step}/{cfg.steps}")
    with _progress() as progress:
        task = progress.add_task("grpo", total=cfg.steps, completed=trainer.step, info="rolling out")

        def update(row) -> None:
            hit = "-" if row.cache_hit_rate is None else f"{row.cache_hit_rate:.0%}"
            kl = "- (no update)" if row.kl is None else f"{row.kl:.4f}"
            progress.update(task, completed=row.step, info=(
                f"reward {row.reward_mean:.3f} · noise p {row.noise_p:.2f} · kl {kl} · "
                f"pool {row.pool_size} ({row.pool_share:.0%} of batch) · cache {hit} · "
                f"rollout {row.rollout_seconds:.0f}s update {row.update_seconds:.0f}s"))

        try:
            trainer.train(on_step=update)
        except KeyboardInterrupt:
            err.print(f"interrupted: checkpoint saved at step {trainer.step}; "
                      f"continue with `zsl train grpo --resume {cfg.out}`")
            raise typer.Exit(130) from None
    out.print(f"adapter: {Path(cfg.out) / 'adapter'}  ·  metrics: {Path(cfg.out) / 'metrics.db'}")


@train_app.command("show")
def show_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    last: Annotated[int, typer.Option(min=1, help="Show the last N steps.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="All rows as JSON lines.")] = False,
) -> None:
    """A run's metrics table (one row per step)."""
    from rich import box
    from rich.table import Table

    from .metrics import read_metrics

    if not run_dir.is_dir():
        raise ZslError(f"run directory not found: {run_dir}")
    rows = read_metrics(run_dir)
    if as_json:
        for row in rows:  # one JSON object a line, never wrapped or indented
            typer.echo(row.model_dump_json())
        return
    columns = {"step": "step", "reward_mean": "reward", "noise_p": "noise", "kl": "kl", "loss": "loss",
               "searches_per_question": "srch", "zero_variance_groups": "flat",
               "pool_size": "pool", "pool_share": "pool%", "recovered": "recov", "cache_hit_rate": "cache",
               "rollout_seconds": "roll s", "update_seconds": "upd s"}
    table = Table(title=f"{run_dir} · {len(rows)} steps", box=box.SIMPLE_HEAD, padding=0, show_edge=False)
    for header in columns.values():
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows[-last:]:
        values = row.model_dump()
        table.add_row(*(_cell(values[c]) for c in columns))
    out.print(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1e}" if 0 < abs(value) < 0.01 else f"{value:.2f}"
    return str(value)
