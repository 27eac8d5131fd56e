"""The on-disk synthcity set: ``ensure_synthcity`` renders every sample once into a versioned folder
(temp folder, ``meta.json`` written last, atomic rename, stale temp folders removed, spawn pool)."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from core.data.labels import CITYSCAPES19

from .constants import DEFAULT_COUNTS, DEFAULT_SIZE, DEPTH_SCALE, MAX_DEPTH, VERSION
from .render import _render


def _norm_counts(counts):
    if counts is None:
        return dict(DEFAULT_COUNTS)
    if isinstance(counts, dict):
        c = dict(DEFAULT_COUNTS)
        unknown = set(counts) - set(c)
        if unknown:
            raise ValueError(f"synthcity counts: unknown keys {sorted(unknown)} (use {sorted(c)})")
        c.update({k: int(v) for k, v in counts.items()})
    else:
        s, t, v = counts
        c = {"source": int(s), "target_train": int(t), "target_val": int(v)}
    if any(v < 1 for v in c.values()):
        raise ValueError(f"synthcity counts must be >= 1, got {c}")
    return c


def _split_dir(root, domain, split):
    return Path(root) / "source" if domain == "source" else Path(root) / "target" / split


def _stem(domain, split, i):
    return f"src_{i:05d}" if domain == "source" else f"tgt_{split}_{i:05d}"


def _gen_one(task, root, seed, size):
    domain, split, i = task
    sample, enc = _render(seed, domain, split, i, size)
    d = _split_dir(root, domain, split)
    stem = _stem(domain, split, i)
    png = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if enc is not None:
        (d / "images" / f"{stem}.jpg").write_bytes(enc)
    else:
        cv2.imwrite(str(d / "images" / f"{stem}.png"), cv2.cvtColor(sample["image"], cv2.COLOR_RGB2BGR), png)
    cv2.imwrite(str(d / "labels" / f"{stem}.png"), sample["label"], png)
    if "depth" in sample:
        dep = np.clip(np.round(sample["depth"] * DEPTH_SCALE), 1, 65535).astype(np.uint16)
        cv2.imwrite(str(d / "depth" / f"{stem}.png"), dep, png)
    return i


def _worker_init():
    cv2.setNumThreads(1)


def _folder_name(seed, size, counts):
    return (f"synthcity_v{VERSION}_seed{seed}_{size[0]}x{size[1]}_"
            f"{counts['source']}-{counts['target_train']}-{counts['target_val']}")


def _meta(seed, size, counts):
    return {"name": "synthcity", "version": VERSION, "seed": int(seed), "size": [int(size[0]), int(size[1])],
            "counts": counts, "label_space": CITYSCAPES19.name, "depth_scale": DEPTH_SCALE, "depth_unit": "cm",
            "max_depth_m": MAX_DEPTH, "image_ext": {"source": ".png", "target": ".jpg"}}


def _is_complete(root, want):
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return all(meta.get(k) == v for k, v in want.items() if k != "generation_seconds")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale(cache_dir, name, max_age_s=6 * 3600):
    for p in cache_dir.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.split(".tmp-")[1].split("-")[0])
        except (IndexError, ValueError):
            pid = -1
        try:
            old = time.time() - p.stat().st_mtime > max_age_s
        except OSError:
            continue
        if pid <= 0 or pid == os.getpid() or not _pid_alive(pid) or old:
            shutil.rmtree(p, ignore_errors=True)


def ensure_synthcity(cache_dir, seed=0, size=DEFAULT_SIZE, counts=None, workers=2, progress=True) -> Path:
    """Return the root of the synthcity set for (seed, size, counts) under ``cache_dir``, generating it if
    missing. Generation writes into ``.<name>.tmp-<pid>-<rand>`` next to the final folder, writes
    ``meta.json`` last and renames atomically, so an interrupted run never leaves a half set that looks
    complete; stale temp folders of dead processes are removed. A complete folder is reused instantly."""
    cache_dir = Path(cache_dir)
    size = (int(size[0]), int(size[1]))
    if size[0] < 16 or size[1] < 16:
        raise ValueError(f"synthcity size too small: {size}")
    counts = _norm_counts(counts)
    name = _folder_name(seed, size, counts)
    final = cache_dir / name
    want = _meta(seed, size, counts)
    if _is_complete(final, want):
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(cache_dir, name)
    tmp = cache_dir / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for domain, split in (("source", "train"), ("target", "train"), ("target", "val")):
            for sub in ("images", "labels") + (("depth",) if domain == "source" else ()):
                (_split_dir(tmp, domain, split) / sub).mkdir(parents=True, exist_ok=True)
        tasks = [("source", "train", i) for i in range(counts["source"])] + \
                [("target", "train", i) for i in range(counts["target_train"])] + \
                [("target", "val", i) for i in range(counts["target_val"])]
        job = partial(_gen_one, root=str(tmp), seed=int(seed), size=size)
        t0 = time.time()
        bar = None
        if progress:
            from core.progress import bar as progress_bar
            bar = progress_bar(total=len(tasks), desc=f"synthcity {size[0]}x{size[1]}: generate", unit="img")
        if workers and workers > 1:
            import multiprocessing as mp
            # spawn, not fork: a forked child deadlocks in OpenCV's thread pool when the parent has
            # already used cv2 (or torch) threads, e.g. inside a test session or after training
            ctx = mp.get_context("spawn")
            with ctx.Pool(int(workers), initializer=_worker_init) as pool:
                for _ in pool.imap_unordered(job, tasks, chunksize=8):
                    if bar is not None:
                        bar.update(1)
        else:
            for t in tasks:
                job(t)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        meta = dict(want, generation_seconds=round(time.time() - t0, 2))
        part = tmp / "meta.json.part"
        part.write_text(json.dumps(meta, indent=1))
        os.replace(part, tmp / "meta.json")
        if final.exists() and not _is_complete(final, want):
            shutil.rmtree(final, ignore_errors=True)  # a foreign, incomplete folder in our place
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, want):  # lost a race to a concurrent generator: fine if theirs is complete
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final

