"""Shared rich consoles for the CLI (results to stdout, progress and errors to stderr) and the progress bar
every long command shows."""

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def progress_bar() -> Progress:
    """A bar with done/total, elapsed and remaining time, and a free `info` field for running figures."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=err)


class LazyBar:
    """A `progress(done, total)` callback that shows a bar on stderr from its first call until `done == total`
    (for work that only sometimes happens, such as building a dense index)."""

    def __init__(self, description: str):
        self.description = description
        self.bar: Progress | None = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar()
            self.bar.start()
            self.task = self.bar.add_task(self.description, total=total, info="")
        self.bar.update(self.task, completed=done, total=total)
        if done >= total:
            self.bar.stop()
            self.bar = None
