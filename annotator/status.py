"""What a running loop tells its annotator page: which round is open for answers (none while the
run prepares data, trains, evaluates or scores) and what the run is doing meanwhile.

``app`` owns a :class:`RunStatus`, feeds it the progress events of the run's bars (see
``core.progress``: plain dicts, so this module needs neither torch nor the trainer) and opens or
closes rounds; the page reads :meth:`RunStatus.snapshot` once a second while no round is open.
"""
from __future__ import annotations

import threading
import time

import pandas as pd

LOSS_POINTS = 400      # loss-curve points kept per training step (older ones are thinned)


def duration(seconds: float | None) -> str:
    """``3725`` -> ``'1 h 02 min'``, ``95`` -> ``'1 min 35 s'``, ``7`` -> ``'7 s'``; '—' for None."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class RunStatus:
    """Thread-safe state shared by the loop (writer) and the annotator page (reader).

    ``open_round``: the ``rounds.id`` the annotators may answer now, None while the run is busy.
    ``update(event)``: a ``core.progress`` event (desc, n, total, initial, elapsed, postfix, closed).
    ``phase(text)``: what the run does between bars (e.g. reading data, waiting for annotators).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.open_round: int | None = None
        self.finished = False     # the run has ended: the page stops asking (the server goes away next)
        self._phase = "starting"
        self._bar: dict | None = None
        self._loss_desc: str | None = None
        self._loss: list[tuple[int, dict]] = []
        self.version = 0          # bumps on every change the page shows
        self.loss_version = 0     # bumps when the loss curve changes
        self.started = time.time()

    # writer side -----------------------------------------------------------------------------
    def phase(self, text: str) -> None:
        with self._lock:
            self._phase, self._bar = text, None
            self.version += 1

    def update(self, event: dict) -> None:
        with self._lock:
            self._bar = dict(event)
            self._phase = event["desc"]
            post = event.get("postfix") or {}
            if post:
                if event["desc"] != self._loss_desc:     # a new training step: a new curve
                    self._loss_desc, self._loss = event["desc"], []
                if not self._loss or self._loss[-1][1] != post:     # a new value (bars set it every few steps)
                    self._loss.append((int(event["n"]), dict(post)))
                    if len(self._loss) > LOSS_POINTS:     # keep every other point of the older half
                        half = len(self._loss) // 2
                        self._loss = self._loss[:half:2] + self._loss[half:]
                    self.loss_version += 1
            self.version += 1

    def finish(self, text: str) -> None:
        with self._lock:
            self.finished, self.open_round, self._phase, self._bar = True, None, text, None
            self.version += 1

    def set_open_round(self, round_id: int | None) -> None:
        with self._lock:
            self.open_round = round_id
            self.version += 1

    # reader side -----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """{"phase", "bar" (the last event or None), "open_round", "finished", "version", "loss_version",
        "loss_desc", "elapsed" (s since the run started)}."""
        with self._lock:
            return {"phase": self._phase, "bar": None if self._bar is None else dict(self._bar),
                    "finished": self.finished,
                    "open_round": self.open_round, "version": self.version, "loss_version": self.loss_version,
                    "loss_desc": self._loss_desc, "elapsed": time.time() - self.started}

    def loss_frame(self) -> pd.DataFrame:
        """The current training step's smoothed loss terms in long format (iteration, loss, term)."""
        with self._lock:
            rows = [(n, v, k) for n, post in self._loss for k, v in post.items()]
        return pd.DataFrame(rows, columns=["iteration", "loss", "term"])


def progress_markdown(snap: dict) -> str:
    """The run view's text: the step, its count and ETA, and the run's elapsed time."""
    bar = snap["bar"]
    if snap.get("finished"):
        return f"### {snap['phase']}\n\nRun time {duration(snap['elapsed'])}."
    lines = [f"### The run is working: {snap['phase']}"]
    if bar is not None:
        n, total, initial, elapsed = bar["n"], bar["total"], bar.get("initial", 0), bar["elapsed"]
        done_here = n - initial
        rate = elapsed / done_here if done_here > 0 else None
        training = bool(bar.get("postfix")) or bar["desc"].endswith(("warm-up", "train"))   # not 'evaluate (warm-up)'
        unit = "iteration" if training else "item"
        count = f"{unit} **{n}/{total}** ({100 * n / total:.0f} %)" if total else f"{unit} **{n}**"
        eta = rate * (total - n) if rate is not None and total else None
        speed = f"{rate:.2f} s per {unit}" if rate is not None else "measuring speed…"
        state = "done" if bar.get("closed") else f"ETA {duration(eta)}"
        lines.append(f"{count} · {speed} · {state} · this step {duration(elapsed)}")
    lines.append(f"Run time {duration(snap['elapsed'])}. Queries appear here as soon as the next selection "
                 "finishes; this page switches to them by itself.")
    return "\n\n".join(lines)
