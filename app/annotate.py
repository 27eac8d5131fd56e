"""Wiring of the browser annotator into a run: the provider that serves the session's images and
cached predictions, and the wait for "finish round" (the ``annotate`` command is in app/commands.py)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from annotator.provider import BaseProvider, ProviderError
from core.acquisition.confidence import cra_untrusted_from_entropy
from core.data.folder import resize_image

FINISH_GRACE_S = 3.0   # seconds the annotator stays up after "Finish round" (closing at once drops its reply)


class SessionProvider(BaseProvider):
    """Images from the target dataset; prediction, RIPU score (heat map) and CRA untrusted pixels
    from the round's cache written by ActiveSession.score_and_select."""

    def __init__(self, target, round_dir: Path, cache_dir: Path):
        self.target = target
        self.index = {n: i for i, n in enumerate(target.names)}
        self.round_dir = Path(round_dir)
        self.cache_dir = Path(cache_dir)
        thr = self.round_dir / "cra_thresholds.json"
        self.thresholds = np.array(json.loads(thr.read_text())) if thr.exists() else None
        self._last: tuple[str, dict] | None = None

    def _maps(self, name: str) -> dict:
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        path = self.round_dir / f"{name}.npz"
        if not path.exists():
            raise ProviderError(f"no cached prediction for {name} in {self.round_dir}")
        with np.load(path) as z:
            maps = {k: z[k] for k in z.files}
        self._last = (name, maps)
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


def serve(session, rnd: int, round_id: int, host: str = "127.0.0.1", port: int = 7860, auth=None,
          users_file=None, wait: bool = True):
    """Open the annotator for ``round_id``; with ``wait`` block until an annotator presses
    "Finish round" (then the loop retrains)."""
    from annotator.app import launch

    finished = threading.Event()

    def on_finish(_round):
        finished.set()
        return "Round finished: the model is retraining with your labels. You can close this page."

    provider = SessionProvider(session.target, session.cache / f"round{rnd}", session.cache / "superpixels")
    demo = launch(session.workdir, provider, session.val.label_space, round_id=round_id, on_finish=on_finish,
                  auth=auth, users_file=users_file, host=host, port=port, block=False)
    url = getattr(demo, "local_url", None) or f"http://{host}:{port}/"
    print(f"\nAnnotator for round {rnd} is open at {url}  (press 'Finish round' when done)\n", flush=True)
    if wait:
        try:
            while not finished.wait(1.0):
                pass
            time.sleep(FINISH_GRACE_S)   # let "Finish round"'s reply reach the page before the server stops
        finally:
            demo.close()
    return demo


def wait_for_round(session, rnd: int, round_id: int) -> None:
    cfg = session.cfg
    serve(session, rnd, round_id, host=cfg.host, port=cfg.port, auth=cfg.auth, users_file=cfg.users_file)
