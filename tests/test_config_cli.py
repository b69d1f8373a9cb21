"""Each knob declared once: the typer options of every command agree with the config fields they come from,
`--config FILE` and flags combine as documented, and the shipped `configs/*.toml` load and build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from zerosearch_lite.cli import app
from zerosearch_lite.config_cli import CONFIG_PARAM, _submodel, option_help
from zerosearch_lite.errors import ZslError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DRIVEN = {"ask", "search", "serve", "export", "tui", "sim collect", "sim sft", "sim eval", "train grpo",
                 "eval run"}
# What a command takes besides its config: what to act on and how to print it.
OWN_PARAMS = {"question", "query", "as_json", "run", "screen", "resume"}


def commands():
    def walk(command, path=()):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield " ".join(path), command

    return dict(walk(typer.main.get_command(app)))


def test_every_command_with_settings_takes_them_from_one_config():
    found = {name for name, command in commands().items() if getattr(command.callback, "__zsl_config__", None)}
    assert CONFIG_DRIVEN <= found, CONFIG_DRIVEN - found


@pytest.mark.parametrize("name", sorted(CONFIG_DRIVEN))
def test_each_option_matches_its_field_default_bounds_and_help(name):
    command = commands()[name]
    _model, options = command.callback.__zsl_config__
    by_param = {o.param: o for o in options}
    for param in command.params:
        if param.name == CONFIG_PARAM or param.name in OWN_PARAMS:
            continue
        option = by_param.pop(param.name)  # a parameter that is not a config field fails here
        assert param.help == option.help == option_help(option.field), param.name
        assert (param.default if param.default is not None else None) == option.default, param.name
        if not option.argument:
            declared = {d for n in option.names for d in n.split("/")}
            assert set(param.opts) | set(param.secondary_opts) == declared, param.name
    assert not by_param, f"config fields without an option: {sorted(by_param)}"


def test_a_field_means_the_same_in_every_command():
    """The same field (e.g. agent.max_turns) has the same flags, help and bounds wherever it appears; defaults
    may differ per command family (GRPO rollouts take 3 turns, `zsl ask` 4)."""
    seen: dict[int, tuple] = {}
    for name, command in commands().items():
        config = getattr(command.callback, "__zsl_config__", None)
        for option in config[1] if config else []:
            described = (option.names, option.help, option.argument)
            assert seen.setdefault(id(option.field), described) == described, (name, option.param)
    assert len(seen) > 50  # the walk saw the configs


def all_models(model: type[BaseModel], seen=None):
    seen = seen if seen is not None else set()
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        sub = _submodel(field.annotation)
        if sub is not None:
            all_models(sub, seen)
    return seen


def test_every_config_field_has_a_description():
    models = set()
    for command in commands().values():
        config = getattr(command.callback, "__zsl_config__", None)
        if config:
            models |= all_models(config[0])
    missing = [f"{m.__name__}.{name}" for m in models for name, field in m.model_fields.items()
               if not field.description and _submodel(field.annotation) is None]
    assert not missing, missing


def test_config_file_then_flags_and_errors_name_the_flag(tmp_path, monkeypatch):
    from zerosearch_lite.train_lite import grpo

    built = []
    monkeypatch.setattr(grpo, "build_trainer", lambda cfg, resume: built.append(cfg) or (_ for _ in ()).throw(
        ZslError("stop here")))
    config = tmp_path / "run.toml"
    config.write_text('data = "qa.jsonl"\nout = "runs/x"\nsteps = 7\n[agent]\nk = 2\n[engine]\nkind = "template"\n')
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(config), "--steps", "9"])
    assert isinstance(result.exception, ZslError)
    (cfg,) = built
    assert (cfg.steps, cfg.agent.k, cfg.engine.kind, cfg.data) == (9, 2, "template", "qa.jsonl")
    assert cfg.agent.max_turns == 3  # GRPO's own default survives a file that sets only k
    config.write_text('data = "qa.jsonl"\nout = "x"\nstepz = 7\n')
    typo = CliRunner().invoke(app, ["train", "grpo", "--config", str(config)])
    assert isinstance(typo.exception, ZslError) and "unknown setting 'stepz'" in str(typo.exception)
    bad = CliRunner().invoke(app, ["train", "grpo", "--data", "qa.jsonl", "--out", "x", "--max-turns", "0"])
    assert str(bad.exception) == "invalid --max-turns: Input should be greater than or equal to 1"


def test_resume_refuses_flags_that_would_change_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": "qa.jsonl", "out": str(run)}))
    result = CliRunner().invoke(app, ["train", "grpo", "--resume", str(run), "--steps", "3"])
    assert isinstance(result.exception, ZslError) and "--steps cannot change a saved run" in str(result.exception)


def test_a_config_file_cannot_set_what_the_command_leaves_out(tmp_path, monkeypatch):
    """Fields a command excludes from its options are refused in a file too, unless at their default (a run
    folder's config.json holds every field)."""
    from zerosearch_lite.train_lite import grpo
    from zerosearch_lite.train_lite.grpo_config import GRPOConfig

    built = []
    monkeypatch.setattr(grpo, "build_trainer", lambda cfg, resume: built.append(cfg) or (_ for _ in ()).throw(
        ZslError("stop here")))
    config = tmp_path / "run.toml"
    cases = [(["train", "grpo"], "[policy]\nadapter = 'x'", "policy.adapter"),
             (["train", "grpo"], "[policy]\nbackend = 'llama.cpp'", "policy.backend"),
             (["train", "grpo"], "[agent]\nseed = 7", "agent.seed"),
             (["train", "grpo"], "[agent]\nsearch_mode = 'noisy'", "agent.search_mode"),
             (["sim", "collect"], "[engine]\nkind = 'corpus'\nguard = 'drop'", "engine.guard"),
             (["sim", "collect"], "[engine]\nsimulator = 'other'", "engine.simulator"),
             (["eval", "run"], "[engine]\nguard = 'retry'", "engine.guard")]
    for command, table, key in cases:
        data = "['qa.jsonl']" if command[0] == "eval" else "'qa.jsonl'"
        config.write_text(f"data = {data}\nout = 'x'\n{table}\n")
        result = CliRunner().invoke(app, [*command, "--config", str(config)])
        assert str(result.exception) == f"{key!r} in {config} is not a setting of `zsl {' '.join(command)}`"
    assert not built
    run = tmp_path / "run"  # a run's own config.json: every field, the excluded ones at their defaults
    run.mkdir()
    (run / "config.json").write_text(GRPOConfig(data="qa.jsonl", out=str(run)).model_dump_json(indent=2))
    result = CliRunner().invoke(app, ["train", "grpo", "--config", str(run / "config.json"), "--steps", "3"])
    assert str(result.exception) == "stop here" and built[-1].steps == 3
    shipped = ROOT / "runs" / "grpo-learning-1201" / "run" / "config.json"
    if shipped.is_file():  # a real run folder, where the checkout has one
        result = CliRunner().invoke(app, ["train", "grpo", "--config", str(shipped)])
        assert str(result.exception) == "stop here"


CONFIG_COMMANDS = {"collect": "sim collect", "sft": "sim sft", "grpo": "train grpo", "eval": "eval run"}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_build(path):
    """Each file names its command in its first line (`# zsl train grpo --config …`) and validates against it."""
    from zerosearch_lite.config_cli import build_config

    first = path.read_text().splitlines()[0]
    assert first.startswith("# zsl "), f"{path.name}: the first line says which command takes it"
    words = first.removeprefix("# zsl ").split()
    known = commands()
    name = next(n for n in (" ".join(words[:2]), words[0], f"{words[0]} run") if n in known)
    command = known[name]
    model, options = command.callback.__zsl_config__
    config = build_config(model, options, {}, path)
    assert isinstance(config, model)
