"""The one rule for rerunning a command into a run folder: same settings, apart from the free ones."""

from __future__ import annotations

import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.evaluation.runner import RERUN_FREE, EvalConfig
from zerosearch_lite.saved_settings import CONFIG_FILE, check_rerun, exclude_spec, save


def test_exclude_spec_reaches_into_nested_configs():
    assert exclude_spec({"out", "engine.http_retry_s", "engine.cache"}) == {
        "out": True, "engine": {"http_retry_s": True, "cache": True}}


def test_a_rerun_may_change_free_settings_only(tmp_path):
    cfg = EvalConfig.model_validate({"data": ["qa.jsonl"], "engine": {"kind": "corpus", "corpus": "c.jsonl"}})
    assert check_rerun(cfg, tmp_path, "an evaluation", free=RERUN_FREE) is None  # nothing saved yet
    save(cfg, tmp_path)
    waits_longer = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"http_retry_s": 5.0}),
                                          "bootstrap": 200})
    assert check_rerun(waits_longer, tmp_path, "an evaluation", free=RERUN_FREE) == cfg
    assert waits_longer.fingerprint() == cfg.fingerprint()  # the default run folder stays the same
    other_k = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"corpus": "d.jsonl"})})
    with pytest.raises(ZslError, match=r"other settings \(engine\.corpus differ\)"):
        check_rerun(other_k, tmp_path, "an evaluation", free=RERUN_FREE)


def test_another_commands_config_is_refused_not_overwritten(tmp_path):
    (tmp_path / CONFIG_FILE).write_text('{"steps": 3}')
    cfg = EvalConfig.model_validate({"data": ["qa.jsonl"]})
    with pytest.raises(ZslError, match="is not an evaluation's config"):
        check_rerun(cfg, tmp_path, "an evaluation", free=RERUN_FREE)
    assert (tmp_path / CONFIG_FILE).read_text() == '{"steps": 3}'
