"""The BM25 corpus engine on the HotpotQA slice: gold passages found, index saved and reloaded, bad files."""

import json
import os
import shutil

import bm25s
import pytest
from conftest import DATA

from zerosearch_lite import paths
from zerosearch_lite.errors import ZslError
from zerosearch_lite.simulator.contents import join_contents, split_contents
from zerosearch_lite.simulator.corpus import CorpusSearchEngine

CORPUS = DATA / "corpus_small.jsonl"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return CorpusSearchEngine(CORPUS, index_dir=tmp_path_factory.mktemp("idx") / "small")


@pytest.fixture(scope="module")
def questions():
    with (DATA / "hotpot_small.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_bm25_finds_gold_passages_in_top_5(engine, questions):
    results = engine.lookup([q["question"] for q in questions], 5)
    top5 = [{doc.title for doc in result.docs} for result in results]
    # Questions whose two supporting passages BM25 ranks in the top 5 (measured: they share its words).
    for i in (0, 3, 5, 13, 19):
        assert set(questions[i]["supporting_titles"]) <= top5[i], questions[i]["question"]
    found = sum(title in top5[i] for i, q in enumerate(questions) for title in q["supporting_titles"])
    assert found / sum(len(q["supporting_titles"]) for q in questions) >= 0.7  # 0.75 measured on this slice


def test_results_carry_docs_timing_and_no_cache(engine):
    result = engine.lookup(["Scott Derrickson director"], 5, mode="noisy")[0]
    assert len(result.docs) == 5 and result.docs[0].title == "Scott Derrickson"
    assert all(doc.source == "corpus" for doc in result.docs)
    assert result.seconds > 0 and result.cache_hit is False and result.mode is None
    assert engine.search(["Scott Derrickson director"], 5) == [result.docs]  # mode is ignored
    assert engine.doc_count == 300 and engine.skipped == 0 and engine.warnings == []


def test_retrieve_gives_corpus_ids_and_descending_scores(engine):
    hits = engine.retrieve(["Scott Derrickson", "Laleli Mosque Istanbul"], 4)
    assert hits[0][0].id == "hotpot_1" and hits[0][0].contents.startswith('"Scott Derrickson"\n')
    for row in hits:
        scores = [hit.score for hit in row]
        assert len(row) == 4 and scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_empty_stopword_and_unknown_queries_get_no_docs(engine):
    results = engine.lookup(["", "   ", "the of and", "xyzzyplugh"], 5)
    assert [r.docs for r in results] == [[], [], [], []]
    assert results[0].warnings == ["empty query"] and "stopwords" in results[2].warnings[0]
    assert engine.lookup([], 5) == [] and engine.lookup(["Ed Wood"], 0)[0].docs == []


def test_default_index_lives_under_the_index_dir():
    engine = CorpusSearchEngine(CORPUS)
    assert engine.index_path.parent == paths.index_dir()
    assert (
        engine.index_path.name.startswith("corpus_small-")
        and (engine.index_path / "zsl_index.json").is_file()
    )
    assert CorpusSearchEngine(CORPUS).loaded_from_disk


def test_reload_does_not_tokenize_or_index_again(tmp_path, monkeypatch):
    first = CorpusSearchEngine(CORPUS, index_dir=tmp_path / "idx")
    assert not first.loaded_from_disk

    def fail(*args, **kwargs):
        raise AssertionError("the saved index should have been loaded")

    monkeypatch.setattr(bm25s.BM25, "index", fail)
    second = CorpusSearchEngine(CORPUS, index_dir=tmp_path / "idx")
    assert second.loaded_from_disk
    assert first.retrieve(["Ed Wood film Tim Burton"], 5) == second.retrieve(["Ed Wood film Tim Burton"], 5)


def test_changed_corpus_or_damaged_index_is_rebuilt(tmp_path):
    corpus = tmp_path / "c.jsonl"
    shutil.copy(CORPUS, corpus)
    CorpusSearchEngine(corpus, index_dir=tmp_path / "idx")
    with corpus.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "new", "contents": '"Zanzibarian"\nA zanzibarian passage.'}) + "\n")
    changed = CorpusSearchEngine(corpus, index_dir=tmp_path / "idx")
    assert not changed.loaded_from_disk and changed.doc_count == 301
    assert changed.search(["zanzibarian"], 1)[0][0].title == "Zanzibarian"
    (tmp_path / "idx" / "data.csc.index.npy").write_bytes(b"damaged")
    assert not CorpusSearchEngine(corpus, index_dir=tmp_path / "idx").loaded_from_disk
    assert CorpusSearchEngine(corpus, index_dir=tmp_path / "idx").loaded_from_disk


def edit_in_place(path, old: str, new: str) -> None:
    """A same-size edit that keeps the modification time, as `cp -p` or `rsync -a` leave a file."""
    stat = path.stat()
    text = path.read_text(encoding="utf-8").replace(old, new)
    assert len(text.encode()) == stat.st_size
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_same_size_edit_with_the_old_mtime_is_rebuilt(tmp_path):
    corpus = tmp_path / "c.jsonl"
    shutil.copy(CORPUS, corpus)
    first = CorpusSearchEngine(corpus, index_dir=tmp_path / "idx")
    assert first.search(["Zorrickson"], 1) == [[]]
    edit_in_place(corpus, "Derrickson", "Zorrickson")
    edited = CorpusSearchEngine(corpus, index_dir=tmp_path / "idx")
    assert not edited.loaded_from_disk and edited.fingerprint != first.fingerprint
    assert "Scott Zorrickson" in {doc.title for doc in edited.search(["Zorrickson"], 5)[0]}
    assert CorpusSearchEngine(corpus, index_dir=tmp_path / "idx").loaded_from_disk


def test_an_index_saved_under_an_older_fingerprint_is_rebuilt(tmp_path):
    first = CorpusSearchEngine(CORPUS, index_dir=tmp_path / "idx")
    meta_file = tmp_path / "idx" / "zsl_index.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(meta | {"fingerprint": "0123456789ab"}))  # a size+mtime key
    again = CorpusSearchEngine(CORPUS, index_dir=tmp_path / "idx")
    assert not again.loaded_from_disk and again.warnings == []
    assert again.retrieve(["Ed Wood"], 3) == first.retrieve(["Ed Wood"], 3)


def test_index_dir_holding_other_files_is_refused(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ZslError, match="holds other files"):
        CorpusSearchEngine(CORPUS, index_dir=folder)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_broken_rows_are_skipped_and_counted_with_line_numbers(tmp_path):
    path = tmp_path / "c.jsonl"
    good = json.dumps({"id": "1", "contents": '"Alpha"\nalpha beta'})
    path.write_bytes(f'{good}\nnot json\n\n{{"id": "2"}}\n[1, 2]\n'.encode() + b"\xff\xfe\n")
    engine = CorpusSearchEngine(path, index_dir=tmp_path / "idx")
    assert engine.doc_count == 1 and engine.skipped == 4
    assert "skipped 4 broken rows" in engine.warnings[0]
    for reason in (
        "line 2: invalid JSON",
        'line 4: no "contents"',
        "line 5: not a JSON object",
        "line 6: not UTF-8",
    ):
        assert reason in engine.warnings[0]
    assert engine.search(["alpha"], 10) == [[engine.lookup(["alpha"], 10)[0].docs[0]]]  # k > corpus size


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "corpus not found"),
        (lambda p: p.mkdir(), "corpus is not a file"),
        (lambda p: p.write_bytes(bytes(range(11, 256)) * 4), "no usable rows.*not UTF-8"),
        (lambda p: p.write_text("garbage\nmore garbage\n"), "line 1: invalid JSON"),
        (lambda p: p.write_text(""), "is empty"),
        (lambda p: p.write_text('{"id": "1", "text": "no contents"}\n'), 'line 1: no "contents"'),
    ],
    ids=["missing", "directory", "binary", "garbage", "empty", "no-contents"],
)
def test_unreadable_corpus_is_a_zsl_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "corpus.jsonl"
    make(path)
    with pytest.raises(ZslError, match=message) as info:
        CorpusSearchEngine(path, index_dir=tmp_path / "idx")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_contents_split_and_join():
    assert split_contents(join_contents("Title", "body text")) == ("Title", "body text")
    assert split_contents('"Ed Wood (film)"\nEd Wood is a\n 1994 film.') == (
        "Ed Wood (film)",
        "Ed Wood is a 1994 film.",
    )
    assert split_contents("Absalon\ndragged forth") == (
        "Absalon",
        "dragged forth",
    )  # FlashRAG: unquoted titles
    assert split_contents("no title line") == ("", "no title line")
    assert join_contents("", "just text") == "just text"
