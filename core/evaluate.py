"""Evaluation: confusion matrix, mIoU over the classes present, per-class IoU table, and
whole-image or sliding-window inference."""
from __future__ import annotations

import numpy as np
import torch
from core.progress import bar as progress_bar

from core.data.transforms import to_tensor_image
from core.models.segmentor import upsample


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,C) int64, rows = ground truth, columns = prediction; label 255 (and >= C) ignored."""
    m = label < num_classes
    idx = label[m].astype(np.int64) * num_classes + pred[m].astype(np.int64)
    return np.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(C,) float64 IoU per class as a **fraction** in [0, 1] from a (C, C) confusion matrix (rows:
    ground truth, columns: prediction); NaN for classes absent from the ground truth (not counted in
    mIoU)."""
    tp = np.diag(conf).astype(np.float64)
    gt = conf.sum(1)
    union = gt + conf.sum(0) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    iou[gt == 0] = np.nan
    return iou


def mean_iou(conf: np.ndarray, subset: list[int] | None = None) -> float:
    """mIoU in **percent** (0..100, as papers report it) over the classes present in the ground truth
    (optionally only ``subset``, e.g. SYNTHIA's 13 classes); NaN when none is present."""
    iou = iou_per_class(conf)
    if subset is not None:
        iou = iou[subset]
    return float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan")


def iou_table(names: list[str], conf: np.ndarray) -> str:
    """Markdown table of per-class IoU (%) plus the mIoU row."""
    iou = iou_per_class(conf)
    rows = ["| class | IoU |", "|---|---:|"]
    rows += [f"| {n} | {'-' if np.isnan(v) else f'{100 * v:.1f}'} |" for n, v in zip(names, iou)]
    rows.append(f"| **mIoU** | **{mean_iou(conf):.1f}** |")
    return "\n".join(rows)


@torch.no_grad()
def predict_logits(model, image: np.ndarray, out_size: tuple[int, int] | None = None,
                   window: tuple[int, int] | None = None, stride: tuple[int, int] | None = None,
                   device: torch.device | str = "cpu", adjust=None) -> torch.Tensor:
    """Logits (C, h, w) float32 at ``out_size`` (default: the image size) for one uint8 (H, W, 3) image.

    The model sees the image at its stored resolution (datasets resize at load time). When the image is larger than ``window`` = (h, w) in either side,
    it is covered by overlapping windows (``stride`` defaults to 2/3 of the window) whose upsampled
    logits are averaged. ``adjust``: optional logit adjustment (e.g. label-shift IA) applied before
    the final bilinear upsampling to ``out_size``.
    """
    out_size = out_size or image.shape[:2]
    x = to_tensor_image(image)[None].to(device)
    H, W = image.shape[:2]
    if window is None or (H <= window[0] and W <= window[1]):
        logits = model(x).logits
        logits = upsample(logits, (H, W))
    else:
        wh, ww = min(window[0], H), min(window[1], W)
        sh, sw = stride or (max(1, wh * 2 // 3), max(1, ww * 2 // 3))
        ys = sorted({*range(0, H - wh + 1, sh), H - wh})
        xs = sorted({*range(0, W - ww + 1, sw), W - ww})
        logits = count = None
        for y in ys:
            for x0 in xs:
                out = model(x[..., y:y + wh, x0:x0 + ww]).logits
                out = upsample(out, (wh, ww))
                if logits is None:
                    logits = out.new_zeros(1, out.shape[1], H, W)
                    count = out.new_zeros(1, 1, H, W)
                logits[..., y:y + wh, x0:x0 + ww] += out
                count[..., y:y + wh, x0:x0 + ww] += 1
        logits = logits / count
    if adjust is not None:
        logits = adjust(logits)
    return upsample(logits, out_size)[0].float()


@torch.no_grad()
def evaluate(model, dataset, window: tuple[int, int] | None = None, device="cpu", progress=True,
             adjust=None, desc="evaluate") -> dict:
    """mIoU of ``model`` on a labeled dataset, predicted on each full stored image (sliding ``window``
    when larger) and scored at the labels' resolution.

    Under torchrun (an initialised process group of more than one rank) every rank evaluates the images
    ``i % world == rank`` and the confusion matrices are summed (all-reduce), so each rank returns the
    whole set's result, equal to one process's.

    Returns {"miou" (percent), "iou" (per class in [0, 1], NaN = absent), "confusion" (C, C) int64,
    "names"}."""
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    was_training = model.training
    model.eval().to(device)
    C = dataset.label_space.num_classes
    conf = np.zeros((C, C), np.int64)
    for i in progress_bar(range(rank, len(dataset), world), desc=desc, disable=not progress or rank != 0):
        s = dataset[i]
        logits = predict_logits(model, s["image"], s["label"].shape, window=window, device=device, adjust=adjust)
        conf += confusion_matrix(logits.argmax(0).cpu().numpy(), s["label"], C)
    if world > 1:
        t = torch.from_numpy(conf)
        dist.all_reduce(t)
        conf = t.numpy()
    model.train(was_training)
    return {"miou": mean_iou(conf), "iou": iou_per_class(conf), "confusion": conf,
            "names": dataset.label_space.names}
