"""QA datasets for evaluation and training: JSONL or parquet rows with `question` and `golden_answers` (FlashRAG
names), `id`, and optionally `data_source` (the dataset a row belongs to; the file's name otherwise). Search-R1's
parquet keeps the answers at `reward_model.ground_truth.target`; that layout is read too.

Other field names are mapped by argument. Broken rows (bad JSON, missing or empty fields, wrong
types) are skipped and counted, with the first few reasons kept for the user; a file with no usable
row, or a parquet whose columns hold no question or no answers, is a one-line error. Never loads torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ZslError

MAX_REASONS = 5


@dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    golden_answers: tuple[str, ...]
    source: str = ""  # the dataset: the row's `data_source`, else the file's name without its suffix


@dataclass
class QADataset:
    path: Path
    examples: list[QAExample]
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

    def summary(self) -> str:
        text = f"{len(self.examples)} questions from {self.path}"
        if self.skipped:
            text += f"; skipped {self.skipped} broken rows (first: {'; '.join(self.reasons)})"
        return text


def _rows(path: Path):
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ZslError("reading parquet needs pyarrow: pip install 'zerosearch-lite[train]'") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise ZslError(f"cannot read parquet file {path}: {exc}") from None
        yield 0, table.column_names, None  # the layout, checked by the caller before any row
        for i, row in enumerate(table.to_pylist(), 1):
            yield i, row, None
        return
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ZslError(f"cannot read dataset {path}: {exc.strerror}") from None
    with handle:
        for i, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield i, None, f"line {i}: invalid JSON ({exc.msg})"


def _answers(value) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return None
    answers = tuple(str(a).strip() for a in value if isinstance(a, (str, int, float)) and str(a).strip())
    return answers or None


SEARCH_R1_ANSWERS = ("reward_model", "ground_truth", "target")


def _nested(row: dict, keys: tuple[str, ...]):
    for key in keys:
        if not isinstance(row, dict):
            return None
        row = row.get(key)  # type: ignore[assignment]
    return row


def _check_layout(path: Path, columns: list[str], question_field: str, answers_field: str) -> None:
    answers = answers_field in columns or SEARCH_R1_ANSWERS[0] in columns
    if question_field not in columns or not answers:
        shown = ", ".join(columns[:12]) or "none"
        raise ZslError(
            f"unknown parquet layout in {path}: columns {shown}; expected {question_field!r} and "
            f"{answers_field!r} (FlashRAG) or {'.'.join(SEARCH_R1_ANSWERS)!r} (Search-R1)"
        )


def load_qa(
    path: str | Path,
    *,
    question_field: str = "question",
    answers_field: str = "golden_answers",
    id_field: str = "id",
    limit: int | None = None,
) -> QADataset:
    path = Path(path)
    if not path.is_file():
        raise ZslError(f"dataset not found: {path}")
    dataset = QADataset(path, [])

    def skip(reason: str) -> None:
        dataset.skipped += 1
        if len(dataset.reasons) < MAX_REASONS:
            dataset.reasons.append(reason)

    for i, row, error in _rows(path):
        if i == 0:
            _check_layout(path, row, question_field, answers_field)
            continue
        if error:
            skip(error)
            continue
        if not isinstance(row, dict):
            skip(f"row {i}: not an object")
            continue
        question = row.get(question_field)
        if not isinstance(question, str) or not question.strip():
            skip(f"row {i}: missing {question_field!r}")
            continue
        raw_answers = row.get(answers_field)
        if raw_answers is None:
            raw_answers = _nested(row, SEARCH_R1_ANSWERS)
        answers = _answers(raw_answers)
        if answers is None:
            skip(f"row {i}: missing or empty {answers_field!r}")
            continue
        source = row.get("data_source")
        source = source.strip() if isinstance(source, str) and source.strip() else path.stem
        dataset.examples.append(QAExample(str(row.get(id_field, i)), question.strip(), answers, source))
        if limit is not None and len(dataset.examples) >= limit:
            break
    if not dataset.examples:
        detail = f" ({'; '.join(dataset.reasons)})" if dataset.reasons else " (the file is empty)"
        raise ZslError(f"no usable rows in {path}{detail}")
    return dataset
