"""Shared bits of the bench scripts: machine description for table headers, learning curves."""
import os
import platform


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def fit_curve(model, cfg, *data, checkpoint, eval_every: int, report, **fit_kwargs) -> dict:
    """``core.train.fit(model, cfg, *data, checkpoint=..., **fit_kwargs)`` for ``cfg.iterations``; with
    ``eval_every`` > 0 it pauses every ``eval_every`` iterations of the same schedule (the checkpoint
    carries model, optimizer and method state across the pauses, so the run ends where the
    uninterrupted one ends) and calls ``report(iteration)`` at each pause before the end.
    Returns fit's result with "seconds" summed over the pieces."""
    from core.train import fit

    n = cfg.iterations
    stops = list(range(eval_every, n, eval_every)) if eval_every else []
    if stops:
        cfg.checkpoint_every = eval_every
    seconds = 0.0
    for stop in stops + [None]:
        out = fit(model, cfg, *data, checkpoint=checkpoint, stop_at=stop, **fit_kwargs)
        seconds += out["seconds"]
        if stop is not None:
            report(stop)
    return {**out, "seconds": seconds}
