"""The subcommands that reopen an existing run: ``python launch.py annotate`` and ``python launch.py
export``. They depend on app.session (``reopen``) and app.annotate (``serve``); neither imports this."""
from __future__ import annotations

from pathlib import Path

import storage
from app.annotate import serve
from app.config import ConfigError
from app.session import reopen
from core.evaluate import predict_logits
from core.train import CheckpointError, load_checkpoint


def annotate_only(workdir: str, cache_dir: str | None, host="127.0.0.1", port=7860, auth=None, users_file=None):
    """``python launch.py annotate``: serve the newest round of the run in ``workdir`` until
    "Finish round"; then a ``--resume`` of the run goes on to retrain."""
    s = reopen(workdir, cache_dir)
    row = storage.current_round(s.db, s.run_id)
    if row is None or not s.done(f"round{row['idx']}.score"):
        raise ConfigError(f"{workdir} has no round with selected queries yet (run launch.py --budget ... first)")
    serve(s, row["idx"], row["id"], host=host, port=port, auth=auth, users_file=users_file)
    s.mark(f"round{row['idx']}.annotate")
    print(f"round {row['idx']} finished; continue the loop with: python launch.py --resume --workdir {workdir}")


def export_run(workdir: str, out: str, dense: bool = False, threshold: float = 0.9, cache_dir: str | None = None) -> dict:
    """``python launch.py export``: the run's labels as Cityscapes masks in ``out`` (see storage.exporter);
    with ``dense``, unlabeled pixels take the final model's prediction where its confidence is at least
    ``threshold``. Returns the manifest. ConfigError for a bad threshold or a run without checkpoint."""
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold must be in [0, 1] (got {threshold})")
    s = reopen(workdir, cache_dir)
    fn = None   # name -> (prediction, confidence) of the final model, with --dense
    if dense:
        ck = storage.latest_checkpoint(s.db, s.run_id)
        if ck is None:
            raise ConfigError("--dense needs a trained model, and this run has no checkpoint yet")
        try:
            s.model.load_state_dict(load_checkpoint(s.checkpoint_path(ck["step"]))["model"])
        except CheckpointError as e:
            raise CheckpointError(f"{e}: --dense needs the final model; delete it and run the loop with --resume "
                                  f"to retrain {ck['step']}") from None
        s.model.to(s.device).eval()
        index = {n: i for i, n in enumerate(s.target.names)}

        def predict(name):
            x = s.target[index[name]]
            prob = predict_logits(s.model, x["image"], x["label"].shape, window=s.cfg.infer_window,
                                  device=s.device).softmax(0)
            conf, pred = prob.max(0)
            return pred.byte().cpu().numpy(), conf.cpu().numpy()
        fn = predict
    manifest = storage.export(s.db, Path(out), s.val.label_space, dense=fn, threshold=threshold)
    print(f"exported {len(manifest['images'])} labeled images to {out} (+ manifest.json)")
    return manifest
