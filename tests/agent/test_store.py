import sqlite3

from zerosearch_lite.agent.store import SessionStore
from zerosearch_lite.agent.types import Answer, Search, Segment, Think, Trajectory
from zerosearch_lite.agent.voting import vote
from zerosearch_lite.simulator.types import Doc


def trajectory(answer="Mary Shelley"):
    return Trajectory(
        question="who wrote frankenstein?",
        steps=[Think("t"), Search("frankenstein", [Doc("F", "a novel", "simulated:useful")], "useful", True, 0.1),
               Answer(answer)],
        answer=answer, finished=True, stop_reason="answer", segments=[Segment("p", False), Segment("g", True)],
    )


def test_save_get_search_delete_roundtrip(tmp_path):
    path = tmp_path / "s.db"
    store = SessionStore(path)
    trajs = [trajectory(), trajectory("Percy Shelley")]
    sid = store.save(trajs, vote([t.answer for t in trajs]), policy="embedded", engine="simulated", seconds=1.5)
    record = SessionStore(path).get(sid)  # a second connection sees committed data
    assert record.question == "who wrote frankenstein?" and record.samples == 2
    assert record.trajectories[0].steps[1].docs[0] == Doc("F", "a novel", "simulated:useful")
    assert record.trajectories[0].segments[1].generated is True
    assert [r.id for r in store.list(query="frankenstein")] == [sid]
    assert store.list(query="nothing-like-this") == []
    assert store.delete(sid) and store.get(sid) is None and not store.delete(sid)
    assert sqlite3.connect(path).execute("select count(*) from trajectories").fetchone()[0] == 0


def test_migrations_applied_once(tmp_path):
    path = tmp_path / "s.db"
    SessionStore(path)
    SessionStore(path)
    names = [r[0] for r in sqlite3.connect(path).execute("select name from _migrations")]
    assert names == ["m001_sessions"]


def test_search_takes_any_text_as_words_to_find(tmp_path):
    store = SessionStore(tmp_path / "s.db")
    sid = store.save([trajectory('"Mary" Shelley')], vote(['"Mary" Shelley']), policy="p", engine="e", seconds=1.0)
    for text in ('"', '""', '"mary', 'shelley"', "wrote AND", "NOT", "frank*", "(", "who: wrote", "  "):
        store.list(query=text)  # FTS5 query syntax in the text is no error
    assert [r.id for r in store.list(query='"mary" shelley')] == [sid]
    assert [r.id for r in store.list(query="WHO wrote")] == [sid]
    assert store.list(query="NOT") == [] and store.list(query="shelley nothing-like-this") == []
