"""Progress of iterative solves: who is listening, and how it is shown.

A :class:`Monitor` is made *active* for the dynamic extent of one solve (a
context variable), so that the iterative solvers report without any change to
their call signatures::

    mon = active()
    if mon is not None:
        mon.report(iteration=it, converged=c, total=m, residual=worst)

With no active monitor (plain ``eigsh``, ``progress=False``) a report costs
one context-variable lookup. The display is a tqdm bar when ``tqdm`` can be
imported, else lines on stderr, at most one every ``interval`` seconds plus
one when the solve ends. This module imports nothing else of eigrad.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("eigrad_monitor", default=None)

#: seconds between two progress lines on stderr
INTERVAL = 1.0


def active():
    """The monitor of the solve in progress, or ``None``."""
    return _ACTIVE.get()


class Monitor:
    """Receives the reports of one solve (a forward eigensolve or a backward shifted solve).

    Parameters
    ----------
    label : str
        ``"forward"`` or ``"backward"``, and the solver's name, for the display.
    display : bool
        Show progress (tqdm bar or stderr lines).
    """

    def __init__(self, label: str, display: bool):
        self.label = label
        self.display = display
        self.iteration = 0
        self.converged = None
        self.total = None
        self.residual = None
        self.matvecs = 0
        self._start = time.perf_counter()
        self._last_line = self._start
        self._bar = None
        self._lines = 0

    # Reports ---------------------------------------------------------------
    def report(self, *, iteration=None, converged=None, total=None, residual=None, matvecs=None) -> None:
        """Update the state (any subset); shown at most once per ``INTERVAL`` on stderr."""
        if iteration is not None:
            self.iteration = int(iteration)
        if converged is not None:
            self.converged = int(converged)
        if total is not None:
            self.total = int(total)
        if residual is not None:
            self.residual = float(residual)
        if matvecs is not None:
            self.matvecs = int(matvecs)
        if self.display:
            self._show(final=False)

    def add_matvecs(self, columns: int) -> None:
        """``columns`` more operator applications (counted by the bridge to scipy's solvers)."""
        self.matvecs += int(columns)
        if self.display:
            self._show(final=False)

    # Display ---------------------------------------------------------------
    def summary(self) -> str:
        parts = [f"eigrad {self.label}:"]
        if self.iteration:
            parts.append(f"iteration {self.iteration}")
        if self.converged is not None and self.total is not None:
            parts.append(f"{self.converged}/{self.total} converged")
        if self.residual is not None:
            parts.append(f"worst residual {self.residual:.2e}")
        if self.matvecs:
            parts.append(f"{self.matvecs} matvecs")
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        return parts[0] + " " + ", ".join(parts[1:])

    def _show(self, final: bool) -> None:
        if self._bar is None and not final:
            self._bar = _make_bar(self.label)
        if self._bar is not False and self._bar is not None:
            bar = self._bar
            count = self.iteration or self.matvecs
            if count > bar.n:
                bar.update(count - bar.n)
            post = self.summary().split(": ", 1)[-1]
            bar.set_postfix_str(post, refresh=False)
            if final:
                bar.refresh()
                bar.close()
            return
        now = time.perf_counter()
        if final or now - self._last_line >= INTERVAL:
            self._last_line = now
            self._lines += 1
            print(self.summary() + (" (done)" if final else ""), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.display:
            self._show(final=True)


def _make_bar(label: str):
    """A tqdm bar, or ``False`` when tqdm is not installed (then: lines on stderr)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        try:
            from tqdm import tqdm
        except ImportError:
            return False
    return tqdm(desc=f"eigrad {label}", unit="it", file=sys.stderr, leave=False, dynamic_ncols=True)


@contextlib.contextmanager
def monitoring(label: str, display: bool):
    """Activate a :class:`Monitor` for the block; yields it (closed, i.e. its last line shown, at exit)."""
    mon = Monitor(label, display)
    token = _ACTIVE.set(mon)
    try:
        yield mon
    finally:
        _ACTIVE.reset(token)
        mon.close()
