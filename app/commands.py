"""The subcommands that reopen an existing run: ``python launch.py annotate`` and ``python launch.py
export``. They depend on app.session (``reopen``) and app.annotate (``serve``); neither imports this."""
from __future__ import annotations

from pathlib import Path

import storage
from app.annotate import SessionProvider, serve
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
    serve(s, row["idx"], row["id"], host=host, port=port, auth=auth, users_file=users_file, retrains=False)
    s.mark(f"round{row['idx']}.annotate")
    print(f"round {row['idx']} finished; continue the loop with: python launch.py --resume --workdir {workdir}")


def open_round(s, what: str) -> dict:
    """The run's newest round while it is open for answers (scored, not yet finished); ConfigError
    otherwise, saying what to do. ``what``: the command, for the message."""
    row = storage.current_round(s.db, s.run_id)
    if row is None or not s.done(f"round{row['idx']}.score"):
        raise ConfigError(f"{s.workdir} has no round with selected queries yet, so there is nothing to {what} "
                          "(run launch.py --budget ... first)")
    if s.done(f"round{row['idx']}.annotate"):
        raise ConfigError(f"round {row['idx']} of {s.workdir} is finished; {what} works on the open round (run "
                          "launch.py --resume to select the next one)")
    return row


def export_tool(workdir: str, out: str, fmt: str, cache_dir: str | None = None) -> dict:
    """``python launch.py export --format label-studio|cvat``: the open round's queries, images and
    pre-annotations for another labeling tool (storage.interchange). Returns its summary."""
    from storage.interchange import export_round

    s = reopen(workdir, cache_dir)
    row = open_round(s, f"export for {fmt}")
    provider = SessionProvider(s.cache / "superpixels", s.target, s.cache / f"round{row['idx']}")
    summary = export_round(s.db, row["id"], out, s.val.label_space, fmt, provider.image, provider.prediction)
    print(f"exported round {row['idx']}: {summary['queries']} queries on {summary['images']} images for {fmt} to "
          f"{out} ({', '.join(summary['files'])} + images/); see docs/TOOLS.md")
    return summary


def import_tool(workdir: str, path: str, fmt: str, annotator: str | None = None, cache_dir: str | None = None,
                accept_unchanged: bool = False) -> dict:
    """``python launch.py import --format label-studio|cvat FILE``: a tool's export of the labeled
    tasks back into project.db as answers to the open round's queries, all or nothing, through the
    browser's checks (storage.import_labels). CVAT answers equal to the exported pre-annotation are
    left out unless ``accept_unchanged`` (CVAT's upload turns the pre-annotation into annotations, so
    an untouched box looks answered). Returns the counts."""
    from storage.interchange import answers_from_drawings, read_tool_export

    s = reopen(workdir, cache_dir)
    row = open_round(s, "import")
    space = s.val.label_space
    drawings = read_tool_export(path, fmt, space, storage.image_sizes(s.db), annotator=annotator,
                                round_idx=row["idx"])
    provider = SessionProvider(s.cache / "superpixels", s.target, s.cache / f"round{row['idx']}")
    check = provider.prediction if fmt == "cvat" and not accept_unchanged else None
    prefill = "warmup" if row["idx"] <= 1 else f"round{row['idx'] - 1}"
    rows, untouched = answers_from_drawings(s.db, row["id"], drawings, prediction=check, prefill=prefill)
    classes = {c.train_id for c in space.classes} | {255}
    counts = storage.import_labels(s.db, rows, row["id"], classes)
    counts["untouched"] = untouched
    storage.checkpoint_wal(s.db)
    left = (f", {untouched} left out because they equal the exported pre-annotation (--accept-unchanged "
            "imports them)") if untouched else ""
    print(f"imported {counts['stored']} answers into round {row['idx']} ({counts['unchanged']} unchanged, "
          f"{counts['kept']} already answered by someone else kept{left}); then press 'Finish round' in the "
          f"annotator if the run still waits, or continue a stopped run with: python launch.py --resume "
          f"--workdir {workdir}")
    return counts


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
