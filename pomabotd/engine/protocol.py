"""The records that cross between pomabotd and its workers, built by keyword.

A cycle's input does not travel inside these when workers can open it: they read it by byte
range from where an `InputRef` says (the executor's `Sharing` decides where that is); an
executor whose workers cannot carries the bytes each submission needs in its `Job`. What goes
to a worker is a `Task` (which bytes to read, which markets are held) and the cycle's `Job`;
what comes back is a `ChunkOut`, carrying only what selection and the outputs need:
candidates, held markets, refusals and counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from pomabotd.domain.belief import Prior
from pomabotd.domain.models import Evaluation, Market
from pomabotd.wire import Rejected

__all__ = ["ChunkOut", "Cut", "InputRef", "Job", "Span", "Task"]

Span = tuple[int, int]
"""`[start, end)`: a byte range of an input, starting at a line start."""


class Cut(msgspec.Struct, frozen=True, kw_only=True):
    """Bytes carried to a worker are part of a bigger input: whether its lines go on `before`
    them and `after` them."""

    before: bool
    after: bool


class InputRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a worker reads one input: `path` is what a worker opens (the executor's
    `Sharing` names it, so that a file renamed over meanwhile is still the one planned where
    it can), or, when `local`, a name only pomabotd's own process knows (an executor whose
    workers run elsewhere carries them the bytes). `ino` and, when not 0, `dev` identify the
    file; `size` is its length when planned; `name` is the source named in refusals. `cut` is
    set on bytes carried to a worker that are only part of the input."""

    name: str
    path: str
    size: int
    dev: int = 0
    ino: int = 0
    local: bool = False
    cut: Cut | None = None


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """What every task of one cycle shares. `kernel` and `prior` apply to the built-in
    evaluator only (`batch.kernel`, `strategy.prior`); `decoder` is the one that decodes lines
    for the columnar kernel (`batch.decoder`, resolved: `native` only where it is built)."""

    as_of: datetime
    markets: InputRef
    signals: InputRef
    want_lines: bool
    timeout_ms: int
    retry_attempts: int
    kernel: Literal["columnar", "scalar"] = "columnar"
    prior: Prior = "fixed"
    decoder: Literal["native", "msgspec"] = "msgspec"
    #: Input bytes carried with the job, by `InputRef.path`, for workers that cannot open the
    #: inputs themselves (empty when they can).
    parts: dict[str, bytes] = msgspec.field(default_factory=dict)


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """One piece of work: market lines and the signal lines that go with them.

    `markets` and `signals` are byte ranges of the inputs, read and joined in order. With
    `search`, `signals` is one window of a market-ordered signals input in which the worker
    finds the run of lines about its markets itself (reading past the window as far as the
    run goes) and reports where it lies. `only` >= 0 evaluates just that market of the task and
    reports no refused lines; the supervisor uses it to find which market kills its worker.
    A `stray` task has no markets: its `signals` range holds signal lines no piece claimed,
    which it counts, refuses when they name no market, and reports the market ids of (`keys`).
    """

    index: int
    markets: list[Span]
    signals: list[Span]
    keep: frozenset[str] = frozenset()
    search: bool = False
    only: int = -1
    stray: bool = False


class ChunkOut(msgspec.Struct, kw_only=True):
    """What a task gives back.

    Refused lines are numbered within the task's own lines; the parent maps them to the
    source's line numbers. `signals` counts the non-blank signal lines used. `misrouted` says
    the input broke the market-order assumption (`search`): nothing else is then set.
    `columnar` counts the markets the columnar kernel evaluated (the others ran market by
    market), `native` those of them the native decoder decoded. For a `search` task,
    `market_lines` and `signal_lines` count the lines of its market range and of its signal
    run, `run` is that run's byte range (None when no line of
    the window was about its markets) and `keys` holds a 64-bit hash of each market id of its
    range, so that ids repeated across tasks can be found without anyone mapping every id.
    A `stray` task's `run` is its range, `keys` the hashes of the market ids its lines name.
    `kernel_error` says why the columnar kernel's pass over the task failed (it then ran market
    by market). `short` says a search task was carried only part of the signals input and its
    run reached that part's edge: nothing else is set, and it must be carried more.
    """

    index: int
    lines: bytes = b""
    candidates: list[Evaluation] = []
    markets: list[Market] = []
    kept: list[Evaluation] = []
    market_rejected: list[Rejected] = []
    signal_rejected: list[Rejected] = []
    failures: list[tuple[str, str]] = []
    evaluated: int = 0
    failed: int = 0
    signals: int = 0
    retries: int = 0
    timeouts: int = 0
    eval_us: float = 0.0
    columnar: int = 0
    native: int = 0
    misrouted: bool = False
    market_lines: int = 0
    signal_lines: int = 0
    run: Span | None = None
    keys: bytes = b""
    kernel_error: str = ""
    short: bool = False
