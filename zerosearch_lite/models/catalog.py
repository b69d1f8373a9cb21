"""What models are resolvable on this machine: the embedded GGUF, GGUFs under `$ZSL_HOME/models`,
and Hugging Face cache entries (no network: the cache is scanned, nothing is downloaded)."""

from __future__ import annotations

from .. import paths
from ..errors import ZslError
from .spec import ResolvedModel, resolve_model


def available_models() -> list[ResolvedModel]:
    found: list[ResolvedModel] = []
    try:
        found.append(resolve_model("embedded"))
    except ZslError:
        pass
    models_dir = paths.home() / "models"
    if models_dir.is_dir():
        for file in sorted(models_dir.rglob("*.gguf")):
            found.append(ResolvedModel(str(file), "gguf", str(file), "local", file.stat().st_size))
    try:
        from huggingface_hub import scan_cache_dir

        for repo in sorted(scan_cache_dir().repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model":
                continue
            for revision in repo.revisions:
                files = {f.file_name for f in revision.files}
                fmt = "hf" if "config.json" in files else "gguf" if any(f.endswith(".gguf") for f in files) else None
                if fmt:
                    found.append(ResolvedModel(repo.repo_id, fmt, str(revision.snapshot_path), "hub", revision.size_on_disk))
                break
    except Exception:  # noqa: BLE001, S110 - a missing or unreadable cache just lists nothing
        pass
    return found
