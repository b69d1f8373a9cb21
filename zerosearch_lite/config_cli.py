"""Typer options derived from pydantic config fields, so each knob is declared once.

A command's settings are one pydantic config (`GRPOConfig`, `EvalConfig`, ...): every field carries its default,
bounds and `description`. `config_command` turns the fields into typer options (nested configs are flattened:
`agent.max_turns` is `--max-turns`), adds `--config FILE` (TOML or JSON; a run directory's `config.json` works)
and hands the command one validated config: file values first, then the flags given on the command line (the
TRL / nanoGPT way). Pydantic is the only validator, so a bad value gets one error format naming its flag.
Must not know any particular command.
"""

from __future__ import annotations

import inspect
import json
import tomllib
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from .errors import ZslError, first_problem

CONFIG_PARAM = "config_file"


def flag(*names: str, hidden: bool = False, argument: bool = False) -> dict[str, Any]:
    """`json_schema_extra` naming a field's flags instead of the default `--field-name`: `flag("-k")` is `-k` alone,
    `flag("--group-size", "-G")` both; `"--on/--off"` names a boolean switch; `argument=True` makes the field a
    positional argument."""
    return {"cli": {"names": names, "hidden": hidden, "argument": argument}}


@dataclass(frozen=True)
class ConfigOption:
    """One config field as a command-line option."""

    path: tuple[str, ...]  # field names from the command's config down to this field
    field: FieldInfo
    annotation: Any
    default: Any
    names: tuple[str, ...]
    hidden: bool = False
    argument: bool = False

    @property
    def param(self) -> str:
        """The Python parameter name typer passes the value under (unique within a command)."""
        return "__".join(self.path)

    @property
    def flag(self) -> str:
        return self.names[0].split("/")[0]

    @property
    def help(self) -> str:
        return option_help(self.field)


def option_help(field: FieldInfo) -> str:
    """A field's description plus its bounds, as the CLI shows it."""
    text = field.description or ""
    bounds = []
    for item in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{symbol} {getattr(item, attr)}")
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _cli_meta(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    cli = extra.get("cli")
    return cli if isinstance(cli, dict) else {}


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if inspect.isclass(annotation) and issubclass(annotation, BaseModel) else None


def config_options(model: type[BaseModel], *, exclude: tuple[str, ...] = (),
                   defaults: BaseModel | None = None, prefix: tuple[str, ...] = ()) -> list[ConfigOption]:
    """The options of `model`'s fields, nested configs flattened; `exclude` lists dotted paths (a nested
    config's path excludes all of it). Defaults come from `defaults` (an instance) where given: a command
    family's own defaults for a shared config, e.g. GRPO's 3 turns against the agent's 4."""
    found: list[ConfigOption] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if ".".join(path) in exclude:
            continue
        sub = _submodel(field.annotation)
        default = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
        if sub is not None:
            found += config_options(sub, exclude=exclude, defaults=default, prefix=path)
            continue
        meta = _cli_meta(field)
        names = tuple(meta.get("names", ())) or (f"--{name.replace('_', '-')}",)
        default = None if default is ... or field.is_required() else default
        found.append(ConfigOption(path, field, field.annotation, default, names, bool(meta.get("hidden")),
                                  bool(meta.get("argument"))))
    return found


def _typer_annotation(option: ConfigOption) -> Any:
    annotation = option.annotation
    if get_origin(annotation) is list and get_origin(get_args(annotation)[0]) is typing.Literal:
        annotation = list[str]  # typer takes lists of plain values only; pydantic checks the choices
    if option.default is None and not _optional(annotation):
        annotation = annotation | None
    if option.argument:
        info = typer.Argument(help=option.help, show_default=option.default is not None)
    else:
        info = typer.Option(*option.names, help=option.help, hidden=option.hidden,
                            show_default=option.default is not None)
    return Annotated[annotation, info]


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in get_args(annotation)


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        node = data.get(key)
        if not isinstance(node, dict):
            node = data[key] = {}
        data = node
    data[path[-1]] = value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML or JSON file of config values (nested tables for nested configs)."""
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ZslError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ZslError(f"config file {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise ZslError(f"config file {path} must hold a table of settings")
    return data


def unknown_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Keys of `data` that are not fields of `model` (recursively): typos in config files."""
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            yield prefix + key
            continue
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(value, dict):
            yield from unknown_keys(sub, value, f"{prefix}{key}.")


def field_default(model: type[BaseModel], path: tuple[str, ...]) -> Any:
    """The value `model` gives the field at `path` when no file or flag sets it: taken from the nested config's
    default instance where there is one (a command family's own defaults), else the field's own default."""
    value: Any = None
    cls: type[BaseModel] | None = model
    for depth, name in enumerate(path):
        field = cls.model_fields.get(name) if cls is not None else None
        if field is None:
            return None
        if depth and isinstance(value, BaseModel):
            value = getattr(value, name)
        else:
            value = None if field.is_required() else field.get_default(call_default_factory=True)
        cls = _submodel(field.annotation)
    return value


def excluded_keys(model: type[BaseModel], options: list[ConfigOption], data: dict[str, Any]) -> Iterator[str]:
    """Dotted names of settings in `data` that are fields of `model` but not options of the command (the paths
    it excludes), unless set to the value the command uses anyway: a run folder's config.json holds every
    field, the excluded ones at their defaults, and must still load as a `--config`."""
    covered = {o.path[:n] for o in options for n in range(1, len(o.path) + 1)}  # options and their configs

    def walk(cls: type[BaseModel], node: dict[str, Any], prefix: tuple[str, ...]) -> Iterator[str]:
        for key, value in node.items():
            path, field = (*prefix, key), cls.model_fields.get(key)
            sub = _submodel(field.annotation) if field is not None else None
            if sub is not None and isinstance(value, dict):
                yield from walk(sub, value, path)
            elif field is not None and path not in covered:  # unknown keys are unknown_keys' to report
                default = field_default(model, path)
                if value != default and value != to_jsonable_python(default):
                    yield ".".join(path)

    yield from walk(model, data, ())


def validation_error(exc: ValidationError, *, flags: dict[tuple, str] | None = None) -> ZslError:
    """`invalid --flag: reason` for the first problem of a config's validation error."""
    return ZslError(f"invalid {first_problem(exc, names=flags, default='value')}")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def build_config(model: type[BaseModel], options: list[ConfigOption], given: dict[str, Any],
                 config_file: str | Path | None = None, command: str | None = None) -> BaseModel:
    """`model` from the command family's defaults, then a config file's values, then the flags in `given`
    (option param → value). Starting from the family's defaults keeps a nested config's values those of the
    command (GRPO's agent takes 3 turns) even when a file or a flag sets only some of its fields. A file may
    not set a field that is not one of `options` (`command`, e.g. `zsl train grpo`, names who refuses it)."""
    data: dict[str, Any] = {}
    for option in options:
        if option.default is not None:
            _set(data, option.path, option.default)
    if config_file:
        loaded = load_config_file(config_file)
        upgrade = getattr(model, "upgrade_settings", None)  # a config that reads older files says how
        if upgrade is not None:
            loaded = upgrade(loaded)
        unknown = list(unknown_keys(model, loaded))
        if unknown:
            raise ZslError(f"unknown setting {unknown[0]!r} in {config_file}")
        excluded = next(excluded_keys(model, options, loaded), None)
        if excluded is not None:
            raise ZslError(f"{excluded!r} in {config_file} is not a setting of `{command or 'this command'}`")
        _merge(data, loaded)
    for option in options:
        if option.param in given:
            _set(data, option.path, given[option.param])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        flags = {tuple(o.path): o.flag for o in options}
        raise validation_error(exc, flags=flags) from None


def config_command(model: type[BaseModel], *, exclude: tuple[str, ...] = (), defaults: BaseModel | None = None,
                   saved_config: Callable[[dict[str, Any]], Path | None] | None = None,
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `func(config: model, **own)`: the command takes `model`'s fields as options plus `--config`,
    and its own parameters (arguments, output flags) as declared on `func`. `saved_config(own)` may name a
    config the command must use as it is (a run to resume): flags cannot change it then."""
    options = config_options(model, exclude=exclude, defaults=defaults)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(func, eval_str=True).parameters.items() if name != "config"]
        taken = {p.name for p in own}
        seen: dict[str, str] = {}
        for option in options:
            for name in option.names:
                for part in name.split("/"):
                    if part in seen:
                        raise TypeError(f"{func.__name__}: flag {part} of {option.param} is also {seen[part]}")
                    seen[part] = option.param
            if option.param in taken:
                raise TypeError(f"{func.__name__}: parameter {option.param} clashes with a config option")

        def command(ctx: typer.Context, **kwargs: Any) -> Any:
            config_file = kwargs.pop(CONFIG_PARAM)
            given = {}
            for option in options:
                value = kwargs.pop(option.param)
                if ctx.get_parameter_source(option.param).name not in ("DEFAULT", "DEFAULT_MAP"):
                    given[option.param] = value
            saved = saved_config(kwargs) if saved_config else None
            if saved is not None:
                if given or config_file:
                    first = next((o.flag for o in options if o.param in given), "--config")
                    raise ZslError(f"{first} cannot change a saved run's settings ({saved}); drop it")
                config_file = saved
            name = "zsl " + " ".join(ctx.command_path.split()[1:])
            return func(config=build_config(model, options, given, config_file, name), **kwargs)

        kw = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        parameters += [p.replace(kind=kw) if p.kind is not kw else p for p in own]
        parameters.append(inspect.Parameter(CONFIG_PARAM, kw, default=None, annotation=Annotated[
            Path | None, typer.Option("--config", help="TOML or JSON settings (a run's config.json works); "
                                                       "flags given here override them.")]))
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        arguments = [inspect.Parameter(o.param, positional, annotation=_typer_annotation(o))
                     if o.default is None else
                     inspect.Parameter(o.param, positional, default=o.default, annotation=_typer_annotation(o))
                     for o in options if o.argument]
        parameters[1:1] = arguments
        parameters += [inspect.Parameter(o.param, kw, default=o.default, annotation=_typer_annotation(o))
                       for o in options if not o.argument]
        command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {}
        command.__doc__ = func.__doc__
        command.__name__ = func.__name__
        command.__zsl_config__ = (model, options)  # type: ignore[attr-defined]
        return command

    return decorate
