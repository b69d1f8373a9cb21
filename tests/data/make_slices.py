"""Make the small test slices in tests/data from the data/ folder. Deterministic: same input, same bytes.

    python tests/data/make_slices.py [DATA_DIR]      # default: the data/ folder of the checkout

hotpot_small.jsonl: the first 20 questions of hotpot_dev_sample.jsonl, unchanged.
nq_small.jsonl: the first 30 questions of nq_open_dev.jsonl, unchanged (held-out questions for training runs).
corpus_small.jsonl: every HotpotQA context paragraph of those questions, then FlashRAG passages (file
order) up to 300 rows. The corpus stores the paragraphs (`hotpot_*` ids, titles unique) question
by question, in question order, without marking where one question's paragraphs end; so the slice takes
all `hotpot_*` rows before the first supporting paragraph of question 21. That holds every paragraph
(gold and distractor) of questions 1-20, plus at most a few distractors of question 21 — real passages
too, harmless. The result is a closed world: every supporting title of the 20 questions is in the slice
(checked below), so BM25 over it is a real search engine for them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

QUESTIONS = 20
NQ_QUESTIONS = 30
PASSAGES = 300
HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "data"


def title_of(row: dict) -> str:
    return row["contents"].split("\n", 1)[0].strip().strip('"')


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def make_slices(data: Path) -> tuple[list[dict], list[dict]]:
    all_questions = read_jsonl(data / "hotpot_dev_sample.jsonl")
    questions = all_questions[:QUESTIONS]
    corpus = read_jsonl(data / "wiki_sample_corpus.jsonl")
    hotpot = [row for row in corpus if row["id"].startswith("hotpot_")]
    flashrag = [row for row in corpus if not row["id"].startswith("hotpot_")]
    position = {title_of(row): i for i, row in enumerate(hotpot)}
    if len(all_questions) > QUESTIONS:
        end = min(position[t] for t in all_questions[QUESTIONS]["supporting_titles"])
    else:
        end = len(hotpot)
    rows = hotpot[:end] + flashrag[: max(0, PASSAGES - end)]
    missing = {t for q in questions for t in q["supporting_titles"]} - {title_of(row) for row in rows}
    if missing:
        raise SystemExit(f"gold passages missing from the slice: {sorted(missing)}")
    return questions, rows


def main() -> None:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    questions, rows = make_slices(data)
    write_jsonl(HERE / "hotpot_small.jsonl", questions)
    write_jsonl(HERE / "corpus_small.jsonl", rows)
    write_jsonl(HERE / "nq_small.jsonl", read_jsonl(data / "nq_open_dev.jsonl")[:NQ_QUESTIONS])
    hotpot = sum(row["id"].startswith("hotpot_") for row in rows)
    print(
        f"{len(questions)} questions; {len(rows)} passages ({hotpot} HotpotQA, {len(rows) - hotpot} FlashRAG)"
    )


if __name__ == "__main__":
    main()
