"""``python launch.py export --workdir W --out DIR [--dense]``: the run's labels as Cityscapes masks."""
from __future__ import annotations

from pathlib import Path

import storage
from app.config import ConfigError


def export_run(workdir: str, out: str, dense: bool = False, threshold: float = 0.9, cache_dir: str | None = None) -> dict:
    from app.session import reopen
    from core.evaluate import predict_logits
    from core.train import load_checkpoint

    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1] (got {threshold})")
    s = reopen(workdir, cache_dir)
    fn = None
    if dense:
        ck = storage.latest_checkpoint(s.db, s.run_id)
        if ck is None:
            raise ConfigError("--dense needs a trained model, and this run has no checkpoint yet")
        s.model.load_state_dict(load_checkpoint(ck["path"])["model"])
        s.model.to(s.device).eval()
        index = {n: i for i, n in enumerate(s.target.names)}

        def fn(name):
            x = s.target[index[name]]
            prob = predict_logits(s.model, x["image"], x["label"].shape, window=s.cfg.infer_window,
                                  device=s.device).softmax(0)
            conf, pred = prob.max(0)
            return pred.byte().cpu().numpy(), conf.cpu().numpy()
    manifest = storage.export(s.db, Path(out), s.val.label_space, dense=fn, threshold=threshold)
    print(f"exported {len(manifest['images'])} labeled images to {out} (+ manifest.json)")
    return manifest
