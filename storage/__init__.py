"""The project store: one SQLite database ``workdir/project.db`` through sqlite-utils. All SQL of the
project lives in this package.

Open it with :func:`open_store`; every function takes the returned ``Database`` first.
numpy + sqlite-utils (+ cv2 for PNG); never imports torch.

- ``storage.db``       opening, schema + migrations, errors, transactions
- ``storage.runs``     runs (config, status), resume steps, checkpoints, metrics
- ``storage.queue``    target images, rounds, queries and their leases
- ``storage.labels``   labels (idempotent, history), review, :func:`label_mask`, :func:`answered_mask`
- ``storage.exporter`` Cityscapes-layout masks + manifest
- ``storage.interchange`` Label Studio and CVAT round trips (export a round's queries, read labels back)
"""
from storage.db import (
    DB_NAME, MIGRATIONS, SCHEMA_VERSION, InvalidInput, LeaseError, StoreError, checkpoint_wal, immediate,
    integrity_ok, open_readonly, open_store, schema_version,
)
from storage.exporter import export, safe_stem
from storage.labels import (
    AnswerRefused, agreement, annotator_stats, approved_answers, answer_of, answer_refusal, answered_mask, decode_patch, effort_by_round,
    encode_patch, get_label,
    image_labels, image_points,
    honeypot_scores, import_labels, label_mask, label_versions, labeled_pixel_count, review, review_rows, save_label,
    submit_label,
)
from storage.queue import (
    add_images, add_queries, add_round, answered_costs, available_queries, current_round, flag, get_image, get_query, get_round,
    holds, image_completion, image_id, image_sizes, labeled_pixels, lease_image, lease_next, lease_query,
    pending_count, round_queries, set_answers_needed, query_kinds, query_units, release, renew, requeue, round_progress, set_round_status, skip, spent_effort, target_pixels,
)
from storage.runs import (
    add_checkpoint, add_metric, last_run, latest_checkpoint, mark_step, metrics_table, set_run_config,
    set_run_status, start_run, step_done, unmark_step,
)

__all__ = [
    "DB_NAME", "MIGRATIONS", "SCHEMA_VERSION", "InvalidInput", "LeaseError", "StoreError", "immediate",
    "checkpoint_wal", "integrity_ok", "open_readonly", "open_store", "schema_version",
    "export", "safe_stem",
    "AnswerRefused", "agreement", "annotator_stats", "approved_answers", "effort_by_round", "answer_of", "answer_refusal", "answered_mask", "decode_patch",
    "encode_patch", "get_label", "image_labels",
    "image_points", "honeypot_scores", "import_labels", "label_mask", "label_versions", "labeled_pixel_count", "review", "review_rows", "save_label",
    "submit_label",
    "add_images", "add_queries", "add_round", "answered_costs", "available_queries", "current_round", "flag", "get_image",
    "get_query", "get_round", "holds", "image_completion", "image_id", "image_sizes", "labeled_pixels",
    "lease_image", "lease_next", "lease_query", "pending_count", "round_queries", "set_answers_needed", "query_kinds", "query_units", "release", "renew",
    "requeue",
    "round_progress", "set_round_status", "skip", "spent_effort", "target_pixels",
    "add_checkpoint", "add_metric", "last_run", "latest_checkpoint", "mark_step", "metrics_table",
    "set_run_config", "set_run_status", "start_run", "step_done", "unmark_step",
]
