"""The settings a run folder keeps (`config.json`) and the one rule for adding to a run: the same settings,
apart from those that do not change what it produces.

`zsl eval`, `zsl sim collect` and `zsl sim sft` resume by rerunning the same command into the same folder; a
rerun under other settings would mix rows, or continue an adapter, made under different ones. Each command
names the settings it lets a rerun change (where the output goes, how far it runs) and calls `check_rerun`
before it loads anything; it writes its settings with `save` only once its inputs are loaded, so a command
that fails to start leaves the folder as it was.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .config_cli import unknown_keys
from .errors import ZslError

CONFIG_FILE = "config.json"

Settings = TypeVar("Settings", bound=BaseModel)


def read_saved(folder: Path, model: type[Settings], what: str) -> Settings | None:
    """The settings saved in `folder`, None when it holds none. A config.json that is not `what`'s (another
    command's, or unreadable) is refused with one line, so it is never overwritten."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    refusal = ZslError(f"{path} is not {what}'s config; give another --out")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise refusal from None
    if not isinstance(data, dict) or next(unknown_keys(model, data), None) is not None:
        raise refusal
    try:
        return model.model_validate(data)
    except ValidationError:
        raise refusal from None


def changed_settings(mine: dict, theirs: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings whose values differ between two config dumps (nested configs walked)."""
    changed = []
    for name in sorted(mine.keys() | theirs.keys()):
        a, b = mine.get(name), theirs.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_settings(a, b, f"{prefix}{name}.")
        elif a != b:
            changed.append(prefix + name)
    return changed


def exclude_spec(names: Collection[str]) -> dict:
    """Pydantic's `exclude` for dotted setting names: {"out", "engine.http_retry_s"} → {"out": True,
    "engine": {"http_retry_s": True}}."""
    spec: dict = {}
    for name in names:
        *parents, leaf = name.split(".")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = True
    return spec


def check_rerun(cfg: Settings, folder: Path, what: str, *, free: Collection[str]) -> Settings | None:
    """The settings saved in `folder` (None when none), refusing with one line when they differ from `cfg` in
    anything but the `free` settings (dotted names reach into nested configs): `what` names the run ("an
    evaluation", "an SFT run")."""
    saved = read_saved(folder, type(cfg), what)
    if saved is not None:
        exclude = exclude_spec(free)
        changed = changed_settings(cfg.model_dump(mode="json", exclude=exclude),
                                   saved.model_dump(mode="json", exclude=exclude))
        if changed:
            raise ZslError(f"{folder} holds {what} made with other settings ({', '.join(changed)} differ); rerun "
                           f"it with its own settings (--config {Path(folder) / CONFIG_FILE}) or give another --out")
    return saved


def save(cfg: BaseModel, folder: Path) -> None:
    """Write `cfg` to `folder`'s config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(cfg.model_dump_json(indent=2))
