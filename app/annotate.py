"""Wiring of the browser annotator into a run: the provider that serves the session's images and
cached predictions, the one server a run keeps from its start to its end (progress while it works,
each round's queries when they exist), and the wait for "Finish round" (the ``annotate`` command is
in app/commands.py)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

import storage
from annotator.provider import BaseProvider, ProviderError
from annotator.status import RunStatus
from core import progress
from core.acquisition.confidence import cra_untrusted_from_entropy
from core.data.folder import resize_image

FINISH_GRACE_S = 3.0   # seconds the annotator stays up after "Finish round" (closing at once drops its reply)


class SessionProvider(BaseProvider):
    """Images from the target dataset; prediction, RIPU score (heat map) and CRA untrusted pixels
    from the open round's cache written by ActiveSession.score_and_select. ``use(target, round_dir)``
    switches to a round (the annotator of a whole run serves one round after another)."""

    def __init__(self, cache_dir: Path, target=None, round_dir: Path | None = None):
        self.cache_dir = Path(cache_dir)
        self.target, self.round_dir, self.index, self.thresholds = None, None, {}, None
        self._last: tuple[str, dict] | None = None
        self._lock = threading.Lock()
        if target is not None:
            self.use(target, round_dir)

    def use(self, target, round_dir: Path) -> None:
        thr = Path(round_dir) / "cra_thresholds.json"
        with self._lock:
            self.target, self.round_dir = target, Path(round_dir)
            self.index = {n: i for i, n in enumerate(target.names)}
            self.thresholds = np.array(json.loads(thr.read_text())) if thr.exists() else None
            self._last = None

    def _maps(self, name: str) -> dict:
        with self._lock:
            last, round_dir = self._last, self.round_dir
        if last is not None and last[0] == (round_dir, name):
            return last[1]
        if round_dir is None:
            raise ProviderError("no round is open: the run is still preparing its queries")
        path = round_dir / f"{name}.npz"
        if not path.exists():
            raise ProviderError(f"no cached prediction for {name} in {round_dir}")
        with np.load(path) as z:
            maps = {k: z[k] for k in z.files}
        with self._lock:
            self._last = ((round_dir, name), maps)
        return maps

    def image(self, name):
        if name not in self.index:
            raise ProviderError(f"unknown target image {name!r}")
        img = self.target[self.index[name]]["image"]
        h, w = self.prediction(name).shape
        if img.shape[:2] != (h, w):   # show the image at the labels' resolution
            img = resize_image(img, (h, w))
        return img

    def prediction(self, name):
        return self._maps(name)["pred"]

    def heatmap(self, name):
        s = self._maps(name)["score"].astype(np.float32)
        return s / max(float(s.max()), 1e-12)

    def untrusted(self, name):
        if self.thresholds is None:
            return None
        m = self._maps(name)
        return cra_untrusted_from_entropy(m["pred"], m["entropy"].astype(np.float32), self.thresholds)


class AnnotatorServer:
    """The browser annotator of a run: started once, before the warm-up (``launch.py`` without
    ``--oracle``), or for one round (``launch.py annotate``). While no round is open the page shows
    the run's progress, fed by every ``core.progress`` bar of this process; :meth:`open_round` serves
    a round's queries and :meth:`wait_finished` blocks until an annotator presses "Finish round"."""

    def __init__(self, workdir, label_space, cache: Path, host: str = "127.0.0.1", port: int = 7860, auth=None,
                 users_file=None, retrains: bool = True):
        from annotator.app import launch
        from annotator.context import AnnotatorError

        self.workdir, self.retrains = Path(workdir), retrains
        self.status = RunStatus()
        self.cache = Path(cache)
        self.provider = SessionProvider(self.cache / "superpixels")
        self._finished: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        try:
            self.demo = launch(workdir, self.provider, label_space, on_finish=self._on_finish, auth=auth,
                               users_file=users_file, host=host, port=port, block=False, status=self.status)
        except OSError as e:   # Gradio: the port is taken (e.g. another run on the default port)
            raise AnnotatorError(f"cannot serve the annotator on {host}:{port} ({str(e).splitlines()[0]}): pass "
                                 "another --port") from None
        self.url = getattr(self.demo, "local_url", None) or f"http://{host}:{port}/"
        progress.subscribe(self.status.update)

    def _event(self, round_id: int) -> threading.Event:
        with self._lock:
            return self._finished.setdefault(round_id, threading.Event())

    def _set_round(self, round_id: int, status: str) -> None:
        db = storage.open_store(self.workdir, create=False)   # called from Gradio's threads: own connection
        try:
            storage.set_round_status(db, round_id, status)
        finally:
            db.close()

    def _on_finish(self, round_id):
        with self._lock:
            if round_id is None or self.status.open_round != round_id:
                return "No round is open."
            self.status.set_open_round(None)     # no more answers: the loop retrains with what it has
            self._set_round(round_id, "closed")  # and the store refuses any answer that raced this click
        if not self.retrains:
            self.status.finish("Round finished. Continue the loop with: python launch.py --resume --workdir "
                               f"{self.workdir}")
            self._event(round_id).set()
            return "Round finished. The loop retrains when it is continued with launch.py --resume."
        self.status.phase("retraining with the round's labels")
        self._event(round_id).set()
        return "Round finished: the model is retraining with your labels. This page shows its progress."

    def open_round(self, target, rnd: int, round_id: int) -> None:
        """Serve round ``rnd``'s queries (its predictions are in ``cache/round<rnd>``)."""
        self.provider.use(target, self.cache / f"round{rnd}")
        self.demo.annotator_context.forget_views()
        self._set_round(round_id, "open")   # (again, when a run stopped after 'Finish round' is resumed)
        self.status.phase(f"round {rnd}: waiting for annotators")
        self.status.set_open_round(round_id)
        print(f"\nAnnotator for round {rnd} is open at {self.url}  (press 'Finish round' when done)\n", flush=True)

    def wait_finished(self, round_id: int) -> None:
        ev = self._event(round_id)
        while not ev.wait(1.0):
            pass

    def close(self, grace: float = 0.0) -> None:
        progress.unsubscribe(self.status.update)
        if grace:
            time.sleep(grace)   # let "Finish round"'s reply reach the page before the server stops
        self.demo.close()


def serve(session, rnd: int, round_id: int, host: str = "127.0.0.1", port: int = 7860, auth=None,
          users_file=None, retrains: bool = True) -> None:
    """Serve round ``rnd`` of ``session`` until "Finish round" (``launch.py annotate``: ``retrains=False``,
    the loop continues with ``--resume``)."""
    server = AnnotatorServer(session.workdir, session.val.label_space, session.cache, host=host, port=port,
                             auth=auth, users_file=users_file, retrains=retrains)
    try:
        server.open_round(session.target, rnd, round_id)
        server.wait_finished(round_id)
    finally:
        server.close(FINISH_GRACE_S)
