"""Progress of long work, for the terminal and for whoever listens.

Every long loop of the studio (generating data, training, evaluation, scoring, oracle answers) runs
through :func:`bar`: a tqdm bar on the terminal, and the same progress as events to the listeners
that :func:`subscribe` registered (the annotator's run view, while ``launch.py`` waits for people).
Listeners get plain dicts, so nothing here knows about them:

    {"desc": str, "n": int (items done), "total": int | None, "initial": int (items done before this
     call, e.g. a resumed training), "elapsed": float (seconds since the bar started),
     "postfix": {name: float} (e.g. smoothed loss terms), "closed": bool}

Events come at most every ``MIN_INTERVAL_S`` per bar, plus one when the bar starts and one when it
closes. A listener that raises is dropped (a broken view never stops training).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from tqdm import tqdm

MIN_INTERVAL_S = 0.25
_listeners: list[Callable[[dict], None]] = []
_lock = threading.Lock()


def subscribe(listener: Callable[[dict], None]) -> None:
    """Send every bar's progress events to ``listener(event)`` (see the module docstring)."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def unsubscribe(listener: Callable[[dict], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _emit(event: dict) -> None:
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        try:
            fn(event)
        except Exception:  # noqa: BLE001 - a listener must never stop the work it watches
            unsubscribe(fn)


class bar:
    """A tqdm bar that also reports to the listeners. ``bar(iterable, desc=..., total=...)`` is
    iterated like tqdm; ``update(n)``, ``set_postfix(dict of floats)`` and ``close()`` as tqdm's.
    ``disable`` hides the terminal bar only; ``report=False`` also keeps it from the listeners (e.g.
    ranks other than 0 of a distributed run)."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 initial: int = 0, disable: bool = False, report: bool = True, **tqdm_kw):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self._iterable = iterable
        self._tqdm = tqdm(iterable, desc=desc, total=total, initial=initial, disable=disable,
                          dynamic_ncols=True, **tqdm_kw)
        self.desc, self.total, self.initial, self.n = desc, total, initial, initial
        self.postfix: dict[str, float] = {}
        self._report = report
        self._t0 = time.monotonic()
        self._last = 0.0
        self._closed = False
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        if not self._report or not _listeners:
            return
        now = time.monotonic()
        if not force and now - self._last < MIN_INTERVAL_S:
            return
        self._last = now
        _emit({"desc": self.desc, "n": self.n, "total": self.total, "initial": self.initial,
               "elapsed": now - self._t0, "postfix": dict(self.postfix), "closed": self._closed})

    def __iter__(self):
        for item in self._tqdm:
            yield item
            self.n += 1
            self._emit()
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self._tqdm.update(n)
        self.n += n
        self._emit()

    def set_postfix(self, values: dict[str, float]) -> None:
        """Show ``values`` after the bar (3 decimals) and send them with the next event."""
        self.postfix = {k: float(v) for k, v in values.items()}
        self._tqdm.set_postfix({k: f"{v:.3f}" for k, v in self.postfix.items()})

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tqdm.close()
        self._emit(force=True)
