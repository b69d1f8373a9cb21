"""Widgets shared by the screens: the navigation bar, a streamed or stored trajectory with collapsible
documents, a document list, the vote tally, metric plots and a yes/no dialog.

Presentation only: they render the runtime's dataclasses and never run models or open stores.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Collapsible, Label, Static
from textual_plotext import PlotextPlot

from ..agent.session import AskOutcome
from ..agent.types import AgentEvent, Answer, Invalid, Search, Think, Trajectory
from ..simulator.types import Doc, SearchResult

SCREENS = (
    ("ask", "f1", "Ask"),
    ("history", "f2", "History"),
    ("simulator", "f3", "Simulator"),
    ("training", "f4", "Training"),
    ("eval", "f5", "Eval"),
    ("models", "f6", "Models"),
)


class NavBar(Static):
    """One line naming every screen with its key; the current one highlighted, each one clickable."""

    def __init__(self, active: str):
        super().__init__(classes="navbar")
        self.active = active

    def on_mount(self) -> None:
        parts = []
        for mode, key, title in SCREENS:
            style = "reverse b" if mode == self.active else "not b"
            parts.append(Content.from_markup(
                f"[@click=app.switch_mode('{mode}')][{style}] $key $title [/][/]", key=key.upper(), title=title
            ))
        self.update(Content(" ").join(parts))


def doc_content(number: int, doc: Doc) -> Content:
    if doc.title:
        return Content.from_markup("[dim]$n.[/] [b]$title[/] — $text", n=number, title=doc.title, text=doc.text)
    return Content.from_markup("[dim]$n.[/] $text", n=number, text=doc.text)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def search_label(step: Search | SearchResult, *, timings: bool = True, mode: bool = True) -> str:
    """E.g. "5 docs · useful · cache hit · 0.01s": what a search returned and where it came from."""
    parts = [plural(len(step.docs), "doc")]
    if mode and step.mode:
        parts.append(step.mode)
    parts.append("cache hit" if step.cache_hit else "generated")
    if timings:
        parts.append(f"{step.seconds:.2f}s")
    return " · ".join(parts)


class DocList(Vertical):
    """Numbered documents (title in bold), or a note when there are none; `None` means still searching.

    Setting `docs` re-renders the list, also when it is set before the widget is mounted.
    """

    docs: reactive[list[Doc] | None] = reactive(None, recompose=True)

    def __init__(self, docs: list[Doc] | None, warnings: list[str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.warnings = warnings or []
        self.set_reactive(DocList.docs, docs)

    def show(self, docs: list[Doc], warnings: list[str]) -> None:
        self.warnings = warnings
        self.docs = list(docs)

    def compose(self) -> ComposeResult:
        if self.docs is None:
            yield Static(Content.from_markup("[dim]searching…[/]"), classes="doc")
            return
        if not self.docs:
            yield Static(Content.from_markup("[$warning](no documents)[/]"), classes="doc")
        for i, doc in enumerate(self.docs, 1):
            yield Static(doc_content(i, doc), classes="doc")
        for warning in self.warnings:
            yield Static(Content.from_markup("[$warning]warning:[/] $w", w=warning), classes="doc")


def summary_text(traj: Trajectory, *, timings: bool = True) -> Content:
    status = "finished" if traj.finished else f"not finished ({traj.stop_reason})"
    u = traj.usage
    seconds = f" · {traj.seconds:.1f}s" if timings else ""
    if timings and u.decode_tokens_per_second:
        seconds += f" · {u.decode_tokens_per_second:.0f} tok/s decode"
    return Content.from_markup(
        "[dim]$status · $turns · $searches · $generated generated$seconds[/]",
        status=status, turns=plural(traj.turns, "turn"), searches=plural(len(traj.searches), "search", "searches"),
        generated=plural(u.completion_tokens, "token"), seconds=seconds,
    )


class TrajectoryView(VerticalScroll):
    """Agent steps as they stream in (`add_event`) or from the store (`show_trajectory`).

    Tokens of the turn being written show in a live line, replaced by the parsed steps when the turn
    ends; each search is a collapsible holding its documents.
    """

    def __init__(self, *, timings: bool = True, follow: bool = True, **kwargs):
        """`follow` keeps the view scrolled to the newest step while nobody scrolls up (streaming)."""
        super().__init__(**kwargs)
        self.timings = timings
        self.follow = follow
        self._live: Static | None = None
        self._live_text = ""
        self._searches: dict[int, tuple[Collapsible, DocList]] = {}
        self._sample = -1
        self.samples = 1

    async def reset(self, samples: int = 1) -> None:
        await self.remove_children()
        self._live, self._live_text, self._searches, self._sample = None, "", {}, -1
        self.samples = samples
        self.anchor(False)
        self.scroll_home(animate=False)

    def _grew(self) -> None:
        """Once the steps overflow the view, anchor it to the bottom: Textual then follows new content
        until the reader scrolls up. (Anchoring earlier would push short content to the bottom.)"""
        if self.follow and not self.is_anchored:
            self.call_after_refresh(self._anchor_when_overflowing)

    def _anchor_when_overflowing(self) -> None:
        if not self.is_anchored and self.max_scroll_y > 0:
            self.anchor()

    def _mount(self, widget) -> None:
        self._grew()
        self.mount(widget)

    def _mount_line(self, content: Content | str, classes: str) -> Static:
        line = Static(content, classes=classes)
        self._mount(line)
        return line

    def _end_live(self) -> None:
        if self._live is not None:
            self._live.remove()
        self._live, self._live_text = None, ""

    def _start_sample(self, sample: int) -> None:
        if sample != self._sample:
            self._end_live()
            self._sample = sample
            if self.samples > 1:
                self._mount_line(
                    Content.from_markup("[b]sample $i of $n[/]", i=sample + 1, n=self.samples), "sample-header"
                )

    def add_event(self, sample: int, event: AgentEvent) -> None:
        self._start_sample(sample)
        if event.kind == "token":
            self._live_text += event.text
            if self._live is None:
                self._live = self._mount_line("", "live")
            self._live.update(Content(self._live_text.strip()))
            self._grew()
            return
        self._end_live()
        if event.kind in ("think", "answer", "error") and event.step is not None:
            self.add_step(event.step)
        elif event.kind == "search_started" and isinstance(event.step, Search):
            doc_list = DocList(None)
            box = Collapsible(doc_list, title=f"search: {event.step.query}", collapsed=False, classes="search")
            self._searches[id(event.step)] = (box, doc_list)
            self._mount(box)
        elif event.kind == "docs" and isinstance(event.step, Search):
            found = self._searches.get(id(event.step))
            if found is None:
                self.add_step(event.step)
            else:
                box, doc_list = found
                box.title = f"search: {event.step.query}  ({search_label(event.step, timings=self.timings)})"
                self._grew()
                doc_list.show(event.step.docs, event.step.warnings)
        elif event.kind == "done" and event.trajectory is not None:
            self._mount_line(summary_text(event.trajectory, timings=self.timings), "summary")

    def add_step(self, step) -> None:
        if isinstance(step, Think):
            self._mount_line(Content.from_markup("[b $secondary]think[/]   $t", t=step.text), "think")
        elif isinstance(step, Search):
            box = Collapsible(DocList(step.docs, step.warnings), collapsed=False, classes="search",
                              title=f"search: {step.query}  ({search_label(step, timings=self.timings)})")
            self._mount(box)
        elif isinstance(step, Answer):
            self._mount_line(Content.from_markup("[b $success]answer[/]  [b]$t[/]", t=step.text), "answer")
        elif isinstance(step, Invalid):
            self._mount_line(Content.from_markup("[$warning]invalid[/] $t", t=step.reason), "invalid")

    def show_trajectories(self, trajectories: list[Trajectory]) -> None:
        """A stored session: every sample's steps and summary, documents collapsible."""
        self.samples = len(trajectories)
        for i, traj in enumerate(trajectories):
            self._start_sample(i)
            for step in traj.steps:
                self.add_step(step)
            self._mount_line(summary_text(traj, timings=self.timings), "summary")


class VoteTally(Static):
    """The voted answer and, with several samples, how the normalized answers split."""

    def show(self, outcome: AskOutcome | None, *, timings: bool = True) -> None:
        if outcome is None:
            self.update("")
            return
        vote = outcome.vote
        answer = Content.from_markup("[b $success]$a[/]", a=outcome.answer) if outcome.answer \
            else Content.from_markup("[$warning](no answer)[/]")
        seconds = f"  ({outcome.seconds:.1f}s)" if timings else ""
        head = Content.from_markup("[b]answer:[/] ") + answer + Content.from_markup("[dim]$s[/]", s=seconds)
        if vote.total <= 1:
            self.update(head)
            return
        counts = [Content.from_markup("$a [b]$c[/]", a=a, c=c) for a, c in vote.counts.items()]
        unanswered = vote.total - sum(vote.counts.values())
        if unanswered:
            counts.append(Content.from_markup("[dim](no answer)[/] [b]$c[/]", c=unanswered))
        tally = Content.from_markup("[b]votes[/] ($n samples): ", n=vote.total) + Content(" · ").join(counts)
        self.update(Content("\n").join([head, tally]))


class MetricPlot(PlotextPlot):
    """One metric over training steps; `steps`/`values` hold what is drawn (None values are skipped)."""

    def __init__(self, title: str, field: str, **kwargs):
        super().__init__(**kwargs)
        self.title = title
        self.field = field
        self.steps: list[int] = []
        self.values: list[float] = []
        self._draw()

    def set_series(self, steps: list[int], values: list[float | None]) -> None:
        pairs = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None]
        self.steps = [s for s, _ in pairs]
        self.values = [float(v) for _, v in pairs]
        self._draw()
        self.refresh()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        if not self.values:
            plt.title(f"{self.title}: no data")
            return
        plt.title(f"{self.title}: {self.values[-1]:.4g}")
        plt.plot(self.steps, self.values, marker="braille")
        plt.xticks(_step_ticks(self.steps))


def _step_ticks(steps: list[int], most: int = 5) -> list[int]:
    """At most `most` whole-number step ticks, first and last included."""
    if len(steps) <= most:
        return list(steps)
    stride = (len(steps) - 1) / (most - 1)
    return sorted({steps[round(i * stride)] for i in range(most)})


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; y / n / Escape work as well as the buttons."""

    BINDINGS: ClassVar[list[BindingType]] = [
        ("y", "answer(True)", "Yes"),
        ("n", "answer(False)", "No"),
        ("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="confirm-question")
            with Horizontal(id="buttons"):
                yield Button("Yes", variant="error", id="yes")
                yield Button("No", variant="primary", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
