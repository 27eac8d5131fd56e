"""The project store: one SQLite database ``workdir/project.db`` through sqlite-utils.

Open it with :func:`open_store`; every function takes the returned ``Database`` first.
numpy + sqlite-utils (+ cv2 for PNG); never imports torch.

- ``storage.db``       opening, schema + migrations, errors, transactions
- ``storage.queries``  images, runs/steps (resume), checkpoints, rounds, queries, leases, metrics
- ``storage.labels``   labels (idempotent, history), review, :func:`label_mask`
- ``storage.exporter`` Cityscapes-layout masks + manifest
"""
from storage.db import (
    DB_NAME, MIGRATIONS, SCHEMA_VERSION, InvalidInput, LeaseError, StoreError, immediate, integrity_ok,
    open_store, schema_version,
)
from storage.exporter import atomic_write, export, safe_stem
from storage.labels import (
    decode_patch, encode_patch, get_label, image_labels, label_mask, label_versions, labeled_pixel_count,
    review, save_label,
)
from storage.queries import (
    image_sizes,
    add_checkpoint, add_images, add_metric, add_queries, add_round, flag, get_image, get_query, image_id,
    last_run, latest_checkpoint, lease_next, mark_step, metrics_table, pending_count, release, renew,
    requeue, round_progress, set_round_status, set_run_config, set_run_status, skip, start_run, step_done,
)

__all__ = [
    "image_sizes",
    "DB_NAME", "MIGRATIONS", "SCHEMA_VERSION", "InvalidInput", "LeaseError", "StoreError", "immediate",
    "integrity_ok", "open_store", "schema_version",
    "atomic_write", "export", "safe_stem",
    "decode_patch", "encode_patch", "get_label", "image_labels", "label_mask", "label_versions",
    "labeled_pixel_count", "review", "save_label",
    "add_checkpoint", "add_images", "add_metric", "add_queries", "add_round", "flag", "get_image", "get_query",
    "image_id", "last_run", "latest_checkpoint", "lease_next", "mark_step", "metrics_table", "pending_count",
    "release", "renew", "requeue", "round_progress", "set_round_status", "set_run_config", "set_run_status", "skip", "start_run",
    "step_done",
]
