"""One run of the studio, top to bottom (the round loop a reader follows in one file):

    data -> source-only warm-up -> evaluate
    for each round: score the target pool + select -> annotate (oracle or humans) -> retrain -> evaluate

Every completed step is recorded in ``workdir/project.db``; ``--resume`` skips completed steps and
continues an interrupted training from its checkpoint, so no answered query is asked again.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import storage
from app.config import ConfigError, RunConfig, query_unit, shown
from app.annotate import FINISH_GRACE_S, AnnotatorServer, serve
from app.oracle import answer_round
from core.acquisition import (ClassEntropyStats, CostModel, check_budget, cra_entropy, parse_budget,
                              pick_queries, pool_select, pooled_round_budget, queries_per_round, scale_budget,
                              slic_segments)
from core.acquisition.cost import median_abs_error
from core.data.folder import folder_label_space
from core.data.transforms import SparseLabels
from core.data.labels import CITYSCAPES19, SYNTHIA16, LabelSpace
from core.data.registry import build_dataset, parse_dataset_spec
from core.evaluate import evaluate, iou_table, mean_iou, predict_logits
from core.methods import adjusts_logits, build_methods, compose_adjust
from core.methods.base import wrap_model
from core.methods.services import broadcast_module
from core.models import Segmentor
from core.models.hrda import state_for
from core.progress import bar as progress_bar
from core.train import (CheckpointError, TrainConfig, fit, load_checkpoint, resolve_device, run_stages,
                        save_checkpoint)


def load_data(cfg: RunConfig):
    """(source, target train, target val) datasets for the run."""
    common = dict(cache_dir=cfg.cache_dir, skip_bad=cfg.skip_bad)
    src_kind, _ = parse_dataset_spec(cfg.source)
    tgt_kind, _ = parse_dataset_spec(cfg.target)
    synth = {"seed": cfg.seed, "size": tuple(cfg.synth_size),
             "counts": dict(zip(("source", "target_train", "target_val"), cfg.synth_counts))}
    src_kw = dict(synth) if src_kind == "synthcity" else ({"size": cfg.source_size} if cfg.source_size else {})
    tgt_kw = dict(synth) if tgt_kind == "synthcity" else ({"size": cfg.target_size} if cfg.target_size else {})
    if tgt_kind in ("cityscapes", "folder"):
        tgt_kw["label_size"] = "full"      # evaluate and budget at the labels' own resolution
    if tgt_kind == "folder":
        tgt_kw["mask_format"] = cfg.mask_format
    if tgt_kind == "cityscapes":
        tgt_kw["label_space"] = target_label_space(cfg)
    source = build_dataset(cfg.source, "source", "train", **common, **src_kw)
    target = build_dataset(cfg.target, "target", "train", **common, **tgt_kw)
    val = build_dataset(cfg.target, "target", "val", **common, **tgt_kw)
    if source.label_space.names != target.label_space.names:
        source = Relabeled(source, target.label_space)
    return source, target, val


def target_label_space(cfg: RunConfig) -> LabelSpace:
    """The classes the run evaluates and labels in, known before any data is read (the annotator opens
    first): a folder target's classes.json, SYNTHIA's 16 shared classes for SYNTHIA -> Cityscapes (and
    mIoU* over 13), else Cityscapes-19."""
    src_kind, _ = parse_dataset_spec(cfg.source)
    tgt_kind, tgt_path = parse_dataset_spec(cfg.target)
    if tgt_kind == "folder":
        return folder_label_space(Path(tgt_path).expanduser())
    if src_kind == "synthia" and tgt_kind == "cityscapes":
        return SYNTHIA16
    return CITYSCAPES19


class Relabeled:
    """A source dataset seen in the target's label space: classes matched by name, others -> 255
    (e.g. GTA5's Cityscapes-19 labels for a folder target with its own classes.json)."""

    def __init__(self, dataset, label_space):
        from core.data.base import DatasetError

        self.dataset, self.label_space, self.names = dataset, label_space, dataset.names
        self.has_depth = bool(getattr(dataset, "has_depth", False))
        to = {n: i for i, n in enumerate(label_space.names)}
        self.lut = np.full(256, 255, np.uint8)
        for c in dataset.label_space.classes:
            if c.name in to:
                self.lut[c.train_id] = to[c.name]
        if (self.lut[:dataset.label_space.num_classes] == 255).all():
            raise DatasetError(f"the source classes ({', '.join(dataset.label_space.names[:5])}, ...) share no "
                               f"class name with the target's ({', '.join(label_space.names[:5])}, ...)")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = dict(self.dataset[i])
        s["label"] = self.lut[s["label"]]
        return s


def build_model(cfg: RunConfig, num_classes: int) -> torch.nn.Module:
    """The run's Segmentor, wrapped by the methods of ``--method`` that wrap the model (HRDA), so the
    warm-up, every round and every prediction use the same model."""
    weights = "imagenet" if cfg.weights is None else (None if cfg.weights == "none" else cfg.weights)
    torch.manual_seed(train_seed(cfg))
    return wrap_model(Segmentor(num_classes, cfg.backbone, cfg.output_stride, head=cfg.head, weights=weights,
                                cache_dir=cfg.cache_dir), build_methods(cfg.method))


def warmup_methods(cfg: RunConfig) -> list:
    """The methods of the source-only warm-up: those of ``--method`` that wrap the model (HRDA: its
    detail loss on the source trains the wrapper it built); none otherwise."""
    return [m for m in build_methods(cfg.method) if m.wraps_model]


def train_config(cfg: RunConfig, iterations: int, lr: float | None = None) -> TrainConfig:
    return TrainConfig(iterations=iterations, batch_size=cfg.batch_size, lr=lr or cfg.lr, warmup=cfg.warmup,
                       grad_clip=cfg.grad_clip, crop_size=cfg.crop, scale=tuple(cfg.scale),
                       infer_window=cfg.infer_window, seed=train_seed(cfg), device=cfg.device,
                       checkpoint_every=cfg.checkpoint_every, workers=cfg.workers)


def train_seed(cfg: RunConfig) -> int:
    """The seed of training and random selection (``--train-seed``, default ``--seed``)."""
    return cfg.seed if cfg.train_seed is None else cfg.train_seed



def score_and_pick(model, image: np.ndarray, labeled: np.ndarray, unit: str, strategy: str, radius: int, *,
                   window=None, device="cpu", adjust=None, **pick) -> tuple:
    """Score one target image and pick its queries: the one acquisition step of the loop (and of the
    benches). ``image`` uint8 (h, w, 3); ``labeled`` bool (H, W) at the label resolution (never picked
    again); ``unit`` square | pixel | superpixel; ``pick``: the rest of core.acquisition.pick_queries's
    options (n, pixels, cost_model, cost_aware, segments, rng). Returns (softmax float32 (C, H, W), picks
    (pick_queries's dicts, in ranking order), the strategy's (H, W) score map)."""
    H, W = labeled.shape
    prob = predict_logits(model, image, (H, W), window=window, device=device,
                          adjust=adjust).softmax(0).cpu().numpy().astype(np.float32)
    picks, score = pick_queries(prob, labeled, unit, strategy, radius, **pick)
    return prob, picks, score


def region_radius(cfg: RunConfig, mode: str) -> int:
    """Default radius: RA 8 (17x17 regions, labelable in the browser); PA 8 (suppression, impurity
    window 17x17 -- the official 32 at 1024x2048 scaled to the embedded 256x512)."""
    return cfg.region_radius if cfg.region_radius is not None else 8


# Options that may differ on --resume and then apply: where the run lives and runs, how it is served,
# how often it checkpoints (none changes results); they are taken from this invocation, never from the
# stored run (serving options, and the password, are not stored). --rounds may grow (the run is extended);
# any other option that differs is refused by name.
RESUME_APPLIES = ("workdir", "cache_dir", "device", "resume", "skip_bad", "checkpoint_every", "workers", "host", "port",
                  "auth", "users_file")
NOT_STORED = ("auth", "users_file", "host", "port")   # per invocation; the password never goes to project.db


def stored_config(cfg: RunConfig) -> dict:
    """What project.db keeps of a run's configuration (``runs.config``)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in NOT_STORED}


# -- torchrun: rank 0 drives the run, the other ranks follow its compute steps ---------------------
COMPUTE = ("warmup", "score", "train", "eval")   # steps every rank computes (rank 0's weights first)


class Ranks:
    """The run's processes. Alone (no torchrun) every call is a no-op. Under torchrun, rank 0 runs the
    session (project.db, the annotator cache, selection, the annotator) and announces each compute step
    (``start``); ranks > 0 (``follow``) receive it and compute with it: the warm-up and round training
    together (DDP), evaluation and scoring sharded by image (``i % world == rank``). Before a compute
    step every rank takes rank 0's weights (a resumed rank 0 may have loaded a checkpoint)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = 0
        if self.world > 1:
            from core.train import init_distributed

            self.rank, self.world = init_distributed()

    def start(self, cmd: str, model=None, **kw) -> None:
        """Rank 0: announce step ``cmd`` (with ``kw``) and share the weights for a compute step."""
        if self.world > 1:
            import torch.distributed as dist

            dist.broadcast_object_list([(cmd, kw)], 0)
            if cmd in COMPUTE:
                broadcast_module(model)

    def receive(self, model=None) -> tuple[str, dict]:
        """Ranks > 0: the next step rank 0 announced (taking rank 0's weights for a compute step)."""
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, 0)
        cmd, kw = box[0]
        if cmd in COMPUTE and model is not None:
            broadcast_module(model)
        return cmd, kw

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on rank 0 ([] on the others); ``[obj]`` alone."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out or []


def segments_for(cfg: RunConfig, name: str, image: np.ndarray, H: int, W: int, cache: Path | None) -> np.ndarray:
    """The (H, W) int32 SLIC superpixels of a target image at its label resolution (core.acquisition.
    superpixel), read from / written to ``cache`` (``workdir/cache/superpixels/size<S>/<name>.png``,
    uint16) when given: rank 0 computes them once per run; other torchrun ranks (no cache) again
    each round."""
    import cv2

    size = superpixel_size(cfg)
    path = None if cache is None else cache / "superpixels" / f"size{size}" / f"{storage.safe_stem(name)}.png"
    if path is not None and path.is_file():
        seg = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if seg is not None and seg.shape == (H, W):
            return seg.astype(np.int32)
    img = image if image.shape[:2] == (H, W) else cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
    seg = slic_segments(img, size)
    if path is not None and seg.max() < 65536:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.png")
        cv2.imwrite(str(tmp), seg.astype(np.uint16))
        os.replace(tmp, path)
    return seg


# With --oracle and a time budget, a round asks for this many times its predicted allowance; the oracle
# answers in ranking order and stops when its simulated clock reaches the allowance (app/oracle.py), so a
# run spends its budget whatever the cost model's error, as a person with a clock would.
ORACLE_OVERSELECT = 1.5


def query_mode(cfg: RunConfig, budget) -> str:
    """How the run's queries are stored: 'pixel' for pixel queries, 'region' for squares and superpixels."""
    return "pixel" if query_unit(cfg.unit, budget) == "pixel" else "region"


def superpixel_size(cfg: RunConfig) -> int:
    """Mean superpixel area in label pixels: ``--superpixel-size``, else a square region's (2r+1)^2."""
    return cfg.superpixel_size or (2 * region_radius(cfg, "region") + 1) ** 2


def score_one(model, target, db, cfg: RunConfig, budget, rnd: int, i: int, device, adjust, cost=None,
              cache: Path | None = None) -> tuple:
    """Score target image ``i`` for round ``rnd`` and pick its queries (reading project.db only):
    ``(i, picks, maps, stats)``; picks = core.acquisition.pick_queries's dicts (a pooled budget: the
    image's candidates, chosen over the pool by rank 0), maps = the annotator cache's pred/score/entropy,
    stats = the image's ClassEntropyStats (merged into the pool's CRA thresholds). ``cost``: the cost
    model. The random strategy's draws depend on (seed, round, image) only, so any sharding of the
    images picks the same queries."""
    s = target[i]
    H, W = s["label"].shape
    unit = query_unit(cfg.unit, budget)
    radius = region_radius(cfg, query_mode(cfg, budget))
    n = pixels = None
    labeled = storage.label_mask(db, s["name"], H, W) != 255 if rnd > 1 else np.zeros((H, W), bool)
    asked = storage.answered_mask(db, s["name"], H, W) if rnd > 1 else np.zeros((H, W), bool)
    labeled |= asked   # also never re-pick inside earlier queries whose answer was void
    if unit == "superpixel" and budget.kind == "region":   # the share up to this round, less what was asked
        pixels = H * W * budget.fraction * rnd / cfg.rounds - np.count_nonzero(asked)
    elif not budget.pooled:
        n = queries_per_round(budget, H, W, cfg.rounds, radius)[rnd - 1]
    segments = segments_for(cfg, s["name"], s["image"], H, W, cache) if unit == "superpixel" else None
    prob, picks, score = score_and_pick(model, s["image"], labeled, unit, cfg.strategy, radius,
                                        window=cfg.infer_window, device=device, adjust=adjust, n=n, pixels=pixels,
                                        cost_model=cost, cost_aware=cfg.cost_aware, segments=segments,
                                        rng=np.random.default_rng([train_seed(cfg), rnd, i]))
    stats = ClassEntropyStats(prob.shape[0])
    stats.update(prob)
    maps = dict(pred=prob.argmax(0).astype(np.uint8), score=score.astype(np.float16),
                entropy=cra_entropy(prob).astype(np.float16))
    return i, picks, maps, stats


def as_tuple(pick: dict) -> tuple:
    """A pick dict as the loop's plain geometry: (y0, x0, y1, x1, score) for a region (square or a
    superpixel's box), (y, x, score) for a pixel."""
    keys = ("y0", "x0", "y1", "x1") if "y0" in pick else ("y", "x")
    return (*(pick[k] for k in keys), pick["score"])


def round_masks(db, target) -> dict[int, np.ndarray]:
    """The active labels of every target image (uint8 (H, W), 255 = unlabeled), read from project.db."""
    masks = {}
    for i, name in enumerate(target.names):
        img = storage.get_image(db, name)
        masks[i] = storage.label_mask(db, name, img["height"], img["width"])
    return masks


def retrain_model(model, cfg: RunConfig, source, target, masks, rnd: int, checkpoint) -> list:
    """One round's training (and its post-hoc stages) on every rank; returns the methods (for their
    logit adjustment)."""
    methods = build_methods(cfg.method)
    tcfg = train_config(cfg, cfg.round_iterations)
    labels = SparseLabels(masks)   # pickles cheaply to --workers processes
    fit(model, tcfg, source, target=target, target_labels=labels, methods=methods,
        checkpoint=checkpoint, desc=f"round {rnd}: train")
    if any(m.post_hoc for m in methods):   # post-hoc stages (e.g. 'fada>cra', 'cr')
        run_stages(methods, model, source, target, cfg=tcfg, target_labels=labels, progress=True)
    return methods


def adjust_from(spec: str, states: list | None):
    """The logit adjustment (label-shift IA) of method spec ``spec`` with the methods' saved states (a
    round checkpoint's "methods"), or None: a resumed run scores and evaluates as the run that trained."""
    if not states:
        return None
    methods = build_methods(spec)
    for m, st in zip(methods, states):
        if adjusts_logits(m):     # IA's priors; the others' states (teachers, discriminators) are not needed
            m.load_state_dict(st)
    return compose_adjust(methods)


def adjusting_states(methods, states: list | None) -> list | None:
    """What other ranks rebuild the adjustment from (``adjust_from``): the states of the methods that
    adjust logits, {} for the others; None when none adjusts."""
    if not states or not any(adjusts_logits(m) for m in methods):
        return None
    return [st if adjusts_logits(m) else {} for m, st in zip(methods, states)]


def follow(cfg: RunConfig) -> None:
    """torchrun ranks > 0: compute the steps rank 0 announces, until it says the run ended. project.db is
    only ever opened read-only here (``storage.open_readonly``); checkpoints are written by rank 0."""
    ranks = Ranks()
    model = None
    while True:
        cmd, kw = ranks.receive(model)
        if cmd == "end":
            return
        if cmd == "setup":   # the run's configuration as rank 0 settled it (a resumed run's stored one)
            for k, v in kw["config"].items():
                if hasattr(cfg, k):
                    setattr(cfg, k, tuple(v) if isinstance(v, list) else v)
            source, target, val = load_data(cfg)
            device, budget = resolve_device(cfg.device), run_budget(cfg)
            model = build_model(cfg, val.label_space.num_classes).to(device)
            db, run_id = storage.open_readonly(cfg.workdir), kw["run_id"]
        elif cmd == "warmup":
            fit(model, train_config(cfg, cfg.iterations), source, checkpoint=kw["checkpoint"],
                methods=warmup_methods(cfg), progress=False)
        elif cmd == "eval":
            adjust = adjust_from(cfg.method, kw["adjust"])
            evaluate(model, val, cfg.infer_window, device=device, progress=False, adjust=adjust)
        elif cmd == "score":
            adjust = adjust_from(cfg.method, kw["adjust"])
            cost = CostModel(kw["cost"])
            model.eval()
            for k in range(0, len(target), ranks.world):
                i = k + ranks.rank
                ranks.gather(score_one(model, target, db, cfg, budget, kw["rnd"], i, device, adjust, cost=cost)
                             if i < len(target) else None)
            model.train()
        elif cmd == "annotate":   # rank 0 (an oracle or people) answers; wait until it marked the step
            while not storage.step_done(db, run_id, kw["step"]):
                time.sleep(1.0)
        elif cmd == "train":
            retrain_model(model, cfg, source, target, round_masks(db, target), kw["rnd"], kw["checkpoint"])


class ActiveSession:
    """One run in ``cfg.workdir``. A new run is recorded in project.db only once ``setup()`` has
    succeeded (data read, model built, ``--init`` loaded), so a failed setup can be retried with other
    options. ``given``: the options the user set explicitly; on ``--resume`` each one that differs
    from the stored run applies (``RESUME_APPLIES``; more ``--rounds`` extend the run at its per-round
    budget) or raises ConfigError naming it. ``None`` (the API): the stored configuration wins."""

    def __init__(self, cfg: RunConfig, quiet: bool = False, given: set[str] | None = None):
        self.cfg = cfg
        self.workdir = Path(cfg.workdir)
        self.ckpt_dir = self.workdir / "checkpoints"
        self.cache = self.workdir / "cache"
        self.db = storage.open_store(self.workdir)
        self.quiet = quiet
        self.run_id = None
        self._extended = self._init_loaded = False
        prev = storage.last_run(self.db)
        if prev is not None and not cfg.resume:
            raise ConfigError(f"{self.workdir} already holds run {prev['id']}: continue it with --resume, or "
                              "choose another --workdir")
        if prev is None and cfg.resume:
            print(f"nothing to resume in {self.workdir}; starting a new run")
        if cfg.resume and prev is not None:
            self.run_id = prev["id"]
            old = prev["config"] if isinstance(prev["config"], dict) else json.loads(prev["config"] or "{}")
            if "image_size" in old and "head" not in old:
                raise ConfigError(f"{self.workdir} holds a run made by an older version (DeepLabV2 on resized "
                                  "inputs), which this version cannot continue: start a new --workdir")
            self._continue(old, given or set())
        self.device = resolve_device(cfg.device)
        self.budget = run_budget(cfg)
        self.metrics: list[dict] = []
        self.adjust = None     # logit adjustment of the current methods (label-shift IA), if any
        self.adjust_states = None   # ... from these method states (saved in the round's checkpoint)
        self.server: AnnotatorServer | None = None   # the run's annotator, when people answer (see run())
        self.ranks = Ranks()                          # torchrun: the other ranks follow this one's steps

    def _continue(self, old: dict, given: set[str]) -> None:
        """Take the stored run's configuration, applying or refusing what the user gave anew."""
        cfg = self.cfg
        new = {k: getattr(cfg, k) for k in given if hasattr(cfg, k)}
        stored = {k: tuple(v) if isinstance(v, list) else v for k, v in old.items()}
        for key, value in stored.items():
            if key not in RESUME_APPLIES and hasattr(cfg, key):
                setattr(cfg, key, value)
        extend = None
        defaults = RunConfig()
        for key, value in sorted(new.items()):
            if key not in stored:   # an option newer than the run: the run was made with its default
                stored[key] = getattr(defaults, key)
            if key in RESUME_APPLIES or value == stored[key]:
                continue
            flag = "--" + key.replace("_", "-")
            if key == "rounds" and value > stored[key]:
                extend = value
                continue
            if key == "rounds":
                raise ConfigError(f"--resume --rounds {value}: run {self.run_id} has {stored[key]} rounds; a run can be "
                                  "extended with more rounds, not shortened")
            raise ConfigError(f"--resume {flag} {shown(value)}: run {self.run_id} was made with {flag} "
                              f"{shown(stored[key])}, and a run continues with its own settings: drop {flag}, or "
                              "start a new run in another --workdir")
        if extend is not None:
            before, cfg.rounds = cfg.rounds, extend
            cfg.budget_rounds = cfg.budget_rounds or before
            if cfg.budget:
                print(f"extending run {self.run_id} from {before} to {extend} rounds at its per-round budget: "
                      f"{cfg.budget} over {cfg.budget_rounds} round(s) becomes {run_budget(cfg)} over {extend}")
            self._extended = True    # recorded by setup() once the extended run passed its checks

    # -- steps -------------------------------------------------------------------------------
    def done(self, step: str) -> bool:
        return storage.step_done(self.db, self.run_id, step)

    def mark(self, step: str) -> None:
        storage.mark_step(self.db, self.run_id, step)

    def setup(self):
        """Read the data, build the model, check that the run can do its work (budget, oracle), load
        ``--init``; then record a new run and its target images."""
        self.source, self.target, self.val = load_data(self.cfg)
        self.names = self.val.label_space.names
        self.model = build_model(self.cfg, self.val.label_space.num_classes).to(self.device)
        if self.run_id is not None and self.done("data"):
            sizes = storage.image_sizes(self.db)
        else:   # label pixels: what budgets count (decodes every target label once, checking it)
            sizes = {name: self.target[i]["label"].shape
                     for i, name in enumerate(progress_bar(self.target.names, desc="read target labels", leave=False,
                                                           disable=self.quiet or len(self.target) < 200))}
        self._check_work(sizes)
        if self.run_id is None:
            if self.cfg.init:
                self.model.load_state_dict(load_init(self.cfg.init, self.model))
                self._init_loaded = True
            self.run_id = storage.start_run(self.db, stored_config(self.cfg))
        elif self._extended:
            storage.set_run_config(self.db, self.run_id, stored_config(self.cfg))
            storage.set_run_status(self.db, self.run_id, "running")
        if not self.done("data"):
            storage.add_images(self.db, [dict(name=n, domain="target", split="train", path="", height=h, width=w)
                                         for n, (h, w) in sizes.items()])
            self.mark("data")
        if not self.quiet:
            print(f"source {self.cfg.source}: {len(self.source)} images | target {self.cfg.target}: "
                  f"{len(self.target)} train, {len(self.val)} val | {self.cfg.backbone} on {self.device}")

    def _check_work(self, sizes: dict) -> None:
        """ConfigError before any training when the rounds could do no work: an oracle without target
        masks, or a budget below one query per image and round, or a method that needs source depth maps
        (depth) on a source without them (GTA5). Warns when val has no masks."""
        needs_depth = [m.name for m in build_methods(self.cfg.method) if getattr(m, "needs_source_depth", False)]
        if needs_depth and not getattr(self.source, "has_depth", False):
            raise ConfigError(f"--method {needs_depth[0]} needs source depth maps (synthcity's source, SYNTHIA with "
                              f"its Depth folder); source {self.cfg.source} has none (GTA5 ships no depth)")
        if self.budget is not None and self.cfg.honeypot_rate and not getattr(self.target, "has_labels", True) \
                and not self.quiet:
            print(f"note: {self.cfg.target} has no masks, so honeypots re-ask answers a reviewer approved in earlier "
                  "rounds (round 1 has none)")
        if self.budget is not None and self.cfg.oracle and not getattr(self.target, "has_labels", True):
            raise ConfigError(f"--oracle answers queries from the target's ground-truth masks, but {self.cfg.target} "
                              "has none (no masks/ folder): label in the browser (drop --oracle), or add the masks")
        if self.budget is not None and sizes:
            h, w = min(sizes.values(), key=lambda hw: hw[0] * hw[1])
            if query_unit(self.cfg.unit, self.budget) == "superpixel" and self.budget.kind == "region":
                size, px = superpixel_size(self.cfg), h * w * self.budget.fraction / self.cfg.rounds
                if px < size / 2:
                    raise ConfigError(f"--budget {self.budget} of a {h}x{w} target image is {px:.0f} px per round, "
                                      f"less than half a {size}-px superpixel: use a smaller --superpixel-size, a "
                                      "larger --budget or fewer --rounds")
            else:
                check_budget(self.budget, h, w, self.cfg.rounds,
                             region_radius(self.cfg, query_mode(self.cfg, self.budget)))
        if not getattr(self.val, "has_labels", True) and not self.quiet:
            print(f"note: the target val split of {self.cfg.target} has no masks, so mIoU cannot be measured "
                  "(shown as nan)")

    def checkpoint_path(self, step: str) -> Path:
        """The checkpoint of a training step: ours live in workdir/checkpoints (found there even when the
        workdir was moved); the warm-up of an --init run is that file."""
        row = storage.latest_checkpoint(self.db, self.run_id, step)
        if step == "warmup" and row is not None and self.cfg.init:
            return Path(row["path"])
        return self.ckpt_dir / f"{step.split('.')[0]}.pt"

    def _load(self, step: str) -> bool:
        """Load a finished training step's weights; False when its checkpoint is gone (our own: the step
        is forgotten, so it is trained again). CheckpointError (one line, with the fix) when damaged."""
        path = self.checkpoint_path(step)
        if not path.exists():
            if step == "warmup" and self.cfg.init:
                raise ConfigError(f"cannot resume: the --init checkpoint {path} is gone")
            print(f"note: {path} is gone; {step} is trained again")
            storage.unmark_step(self.db, self.run_id, step)
            storage.unmark_step(self.db, self.run_id, "round0.eval" if step == "warmup" else
                                step.replace(".train", ".eval"))
            return False
        try:
            self.model.load_state_dict(state_for(self.model, load_checkpoint(path)["model"]))   # --init: either layout
        except CheckpointError as e:
            raise CheckpointError(f"{e}: delete it and run with --resume, and {step} is trained again") from None
        return True

    def warmup(self):
        ck = self.ckpt_dir / "warmup.pt"
        if self.done("warmup") and not any(self.done(f"round{r}.train") or self.done(f"round{r}.score")
                                           for r in range(1, self.cfg.rounds + 1)):
            self._load("warmup")        # once a round has started, resume_model() loads the weights instead
        if not self.done("warmup"):   # (again, when _load found its checkpoint gone)
            if self.cfg.init:   # loaded (and checked) by setup() for a new run; a resumed one loads it here
                if not self._init_loaded:
                    self.model.load_state_dict(load_init(self.cfg.init, self.model))
                ck = Path(self.cfg.init).resolve()
            else:
                self.ranks.start("warmup", self.model, checkpoint=str(ck))
                fit(self.model, train_config(self.cfg, self.cfg.iterations), self.source, checkpoint=ck,
                    methods=warmup_methods(self.cfg), desc="source-only warm-up")
            storage.add_checkpoint(self.db, self.run_id, "warmup", str(ck))
            self.mark("warmup")
        self.evaluate(0, "warm-up")

    def evaluate(self, rnd: int, what: str) -> float:
        step = f"round{rnd}.eval"
        if self.done(step):
            row = next((m for m in storage.metrics_table(self.db, self.run_id) if m["round"] == rnd), {})
            return float(row.get("miou", float("nan")))
        t0 = time.time()
        self.ranks.start("eval", self.model, adjust=self.adjust_states)
        res = evaluate(self.model, self.val, self.cfg.infer_window, device=self.device, desc=f"evaluate ({what})",
                       adjust=self.adjust)
        storage.add_metric(self.db, self.run_id, rnd, "miou", res["miou"])
        storage.add_metric(self.db, self.run_id, rnd, "iou", [None if np.isnan(v) else float(v) for v in res["iou"]])
        storage.add_metric(self.db, self.run_id, rnd, "labeled_pct", self.labeled_pct())
        storage.add_metric(self.db, self.run_id, rnd, "eval_seconds", time.time() - t0)
        self.mark(step)
        print(f"\nTarget val after {what}:\n\n{iou_table(self.names, res['confusion'])}\n")
        ls = self.val.label_space
        if ls.mIoU13:   # SYNTHIA protocol: also the 13-class mIoU*
            star = mean_iou(res["confusion"], [ls.names.index(n) for n in ls.mIoU13])
            storage.add_metric(self.db, self.run_id, rnd, "miou13", star)
            print(f"mIoU* (13 classes): {star:.1f}\n")
        return res["miou"]

    def labeled_pct(self) -> float:
        """Budget spent: pixels inside answered queries, as % of all target-train pixels."""
        return 100.0 * storage.labeled_pixels(self.db, self.run_id) / max(storage.target_pixels(self.db), 1)

    # -- one round ---------------------------------------------------------------------------
    def fit_cost_model(self, rnd: int) -> CostModel:
        """The cost model for round ``rnd``'s selection: the default, refitted per unit on this run's
        answers of earlier rounds (their logged seconds, one sample per answer)."""
        cm = CostModel()
        if self.cfg.oracle and self.cfg.oracle_answer == "exact":   # every superpixel is drawn, as a square is
            cm.weights["superpixel"] = cm.weights["square"].copy()
        rows = [r for r in storage.answered_costs(self.db, self.run_id) if r["round"] < rnd]
        for unit in {r["unit"] for r in rows}:
            mine = [r for r in rows if r["unit"] == unit]
            cm.fit(unit, [r["features"] for r in mine], [r["seconds"] for r in mine])
        return cm

    def record_cost_error(self, rnd: int) -> None:
        """Metrics of round ``rnd`` (once): ``cost_mae_s``, the median |predicted - logged| seconds of its
        answers, predicted before they were asked (by the model fitted on earlier rounds only), and
        ``seconds_spent``, the run's logged seconds so far."""
        if any(m["round"] == rnd and "cost_mae_s" in m for m in storage.metrics_table(self.db, self.run_id)):
            return
        rows = [r for r in storage.answered_costs(self.db, self.run_id) if r["round"] == rnd and r["cost_s"] is not None]
        err = median_abs_error([r["cost_s"] for r in rows], [r["seconds"] for r in rows]) if rows else float("nan")
        storage.add_metric(self.db, self.run_id, rnd, "cost_mae_s", err)
        storage.add_metric(self.db, self.run_id, rnd, "seconds_spent", storage.spent_effort(self.db, self.run_id)["seconds"])

    def score_and_select(self, rnd: int, round_id: int) -> None:
        """Score every target-train image with the current model and add this round's queries (a pooled
        budget: the best candidates over the whole pool); also caches prediction, score and CRA entropy
        maps for the annotator."""
        step = f"round{rnd}.score"
        if self.done(step):
            return
        mode = query_mode(self.cfg, self.budget)
        radius = region_radius(self.cfg, mode)
        out = self.cache / f"round{rnd}"
        out.mkdir(parents=True, exist_ok=True)
        stats = ClassEntropyStats(self.val.label_space.num_classes)
        picked: dict[int, list] = {}
        cost = self.fit_cost_model(rnd)
        self.ranks.start("score", self.model, rnd=rnd, adjust=self.adjust_states,
                         cost={u: w.tolist() for u, w in cost.weights.items()})
        self.model.eval()
        world, n_img = self.ranks.world, len(self.target)
        candidates = []
        for k in progress_bar(range(0, n_img, world), desc=f"round {rnd}: score + select"):
            mine = score_one(self.model, self.target, self.db, self.cfg, self.budget, rnd, k, self.device,
                             self.adjust, cost=cost, cache=self.cache)
            # images k .. k+world-1, one per rank, written here in image order (as one process writes them)
            for res in self.ranks.gather(mine):
                if res is None:
                    continue
                i, picks, maps, st = res
                if self.budget.pooled:
                    candidates += [(i, p) for p in picks]
                else:
                    self.add_picks(round_id, i, picks, picked)
                stats.merge(st)
                np.savez_compressed(out / f"{self.target.names[i]}.npz", **maps)
        if self.budget.pooled:
            spent = storage.spent_effort(self.db, self.run_id)
            by = self.budget.kind
            left = pooled_round_budget(self.budget, self.cfg.rounds, rnd, spent[by])
            if self.cfg.oracle and by == "seconds":   # it stops at the budget: ask for more than predicted
                left *= ORACLE_OVERSELECT
            chosen: dict[int, list] = {}
            for i, p in pool_select(candidates, left, by):
                chosen.setdefault(i, []).append(p)
            for i in sorted(chosen):
                self.add_picks(round_id, i, chosen[i], picked)
        (out / "cra_thresholds.json").write_text(json.dumps(np.nan_to_num(stats.class_thresholds(), nan=-1).tolist()))
        if self.cfg.overlap:   # a share of the real queries goes to two annotators
            ids = [q["id"] for q in storage.round_queries(self.db, round_id)]
            rng = np.random.default_rng([train_seed(self.cfg), rnd, 104729])
            k = int(round(self.cfg.overlap * len(ids)))
            storage.set_answers_needed(self.db, rng.choice(ids, size=k, replace=False).tolist() if k else [], 2)
        if self.cfg.honeypot_rate:
            self.add_honeypots(rnd, round_id, picked, mode, radius)
        self.model.train()
        self.mark(step)

    def add_picks(self, round_id: int, i: int, picks: list[dict], picked: dict[int, list]) -> None:
        """Store image ``i``'s picks as pending queries; ``picked[i]`` keeps their plain geometry."""
        storage.add_queries(self.db, round_id, self.target.names[i], query_mode(self.cfg, self.budget),
                            [{k: v for k, v in p.items() if k != "rank"} for p in picks])
        picked[i] = [as_tuple(p) for p in picks]

    def add_honeypots(self, rnd: int, round_id: int, picked: dict[int, list], mode: str, radius: int) -> None:
        """Mix ``--honeypot-rate`` x (the round's queries) honeypots into the queue: random regions (or
        pixels) of random target images, apart from the round's queries, whose ground truth has labeled
        pixels (a target without masks: answers a reviewer approved in earlier rounds, asked again);
        each takes the score of a random real query, so they sit anywhere in the queue order."""
        scores = [p[-1] for picks in picked.values() for p in picks]
        if not scores:
            return
        want = max(1, int(round(self.cfg.honeypot_rate * len(scores))))
        rng = np.random.default_rng([train_seed(self.cfg), rnd, 7919])
        if not getattr(self.target, "has_labels", True):
            self._reask_approved(round_id, picked, mode, scores, want, rng)
            return
        per_image = np.bincount(rng.integers(len(self.target), size=want), minlength=len(self.target))
        side = 2 * radius + 1
        for i in progress_bar(np.flatnonzero(per_image).tolist(), desc=f"round {rnd}: honeypots"):
            label = self.target[i]["label"]     # read once per image
            H, W = label.shape
            new, truths = [], []
            for _ in range(20 * int(per_image[i])):
                if len(new) == per_image[i]:
                    break
                if mode == "region":
                    y0, x0 = int(rng.integers(max(1, H - side + 1))), int(rng.integers(max(1, W - side + 1)))
                    y1, x1 = min(H, y0 + side), min(W, x0 + side)
                    clash = _overlaps((y0, x0, y1, x1), picked.get(i, []) + new)
                    truth, pick = label[y0:y1, x0:x1], (y0, x0, y1, x1, float(rng.choice(scores)))
                else:
                    y, x = int(rng.integers(H)), int(rng.integers(W))
                    clash = any((y, x) == (p[0], p[1]) for p in picked.get(i, []) + new)
                    truth, pick = label[y, x], (y, x, float(rng.choice(scores)))
                if not clash and not (np.asarray(truth) == 255).all():
                    new.append(pick)
                    truths.append(truth)
            if new:
                storage.add_queries(self.db, round_id, self.target.names[i], mode, new, truths=truths)

    def _reask_approved(self, round_id: int, picked: dict[int, list], mode: str, scores: list, want: int,
                        rng) -> None:
        """Honeypots from reviewer-approved answers of earlier rounds (same geometry, the approved
        answer as the truth), apart from this round's queries."""
        index = {n: i for i, n in enumerate(self.target.names)}
        known = [a for a in storage.approved_answers(self.db, round_id) if a["kind"] == mode]
        for k in rng.permutation(len(known))[:want].tolist():
            a, i = known[k], index.get(known[k]["name"])
            if i is None:
                continue
            if mode == "region":
                box = (a["y0"], a["x0"], a["y1"], a["x1"])
                if _overlaps(box, picked.get(i, [])):
                    continue
                truth = a["patch"] if a["patch"] is not None else np.full((box[2] - box[0], box[3] - box[1]),
                                                                           a["point_class"], np.uint8)
                pick = (*box, float(rng.choice(scores)))
            else:
                if any((a["y"], a["x"]) == (p[0], p[1]) for p in picked.get(i, [])):
                    continue
                truth, pick = a["point_class"], (a["y"], a["x"], float(rng.choice(scores)))
            storage.add_queries(self.db, round_id, a["name"], mode, [pick], truths=[truth])
            picked.setdefault(i, []).append(pick)

    def annotate(self, rnd: int, round_id: int) -> None:
        step = f"round{rnd}.annotate"
        if self.done(step):
            return
        self.ranks.start("annotate", step=step)   # the other ranks wait until this step is marked
        if self.cfg.oracle:
            index = {n: i for i, n in enumerate(self.target.names)}
            limit = None
            if self.budget.pooled:   # the round's allowance, less nothing yet spent in it
                by = self.budget.kind
                limit = (by, pooled_round_budget(self.budget, self.cfg.rounds, rnd,
                                                 storage.spent_effort(self.db, self.run_id)[by]))
            answer_round(self.db, round_id, lambda name: self.target[index[name]]["label"], self.cfg.oracle_answer,
                         limit=limit, cost_aware=self.cfg.cost_aware)
        elif self.server is not None:     # the run's annotator, open since the start
            self.server.open_round(self.target, rnd, round_id)
            self.server.wait_finished(round_id)
        else:
            cfg = self.cfg
            serve(self, rnd, round_id, host=cfg.host, port=cfg.port, auth=cfg.auth, users_file=cfg.users_file)
        self.mark(step)

    def retrain(self, rnd: int) -> None:
        step = f"round{rnd}.train"
        ck = self.ckpt_dir / f"round{rnd}.pt"
        if self.done(step) and self._load(step):
            return
        self.ranks.start("train", self.model, rnd=rnd, checkpoint=str(ck))
        methods = retrain_model(self.model, self.cfg, self.source, self.target, round_masks(self.db, self.target),
                                rnd, ck)
        states = [m.state_dict() for m in methods]
        if any(m.post_hoc for m in methods):   # the stages changed the weights and methods (IA's priors): re-save
            save_checkpoint(ck, {**load_checkpoint(ck), "model": self.model.state_dict(), "methods": states})
        self.adjust = compose_adjust(methods)   # e.g. label-shift IA at inference
        self.adjust_states = adjusting_states(methods, states)   # what other ranks rebuild it from
        storage.add_checkpoint(self.db, self.run_id, step, str(ck))
        self.mark(step)

    def resume_model(self) -> None:
        """Load the newest completed training step's weights (a round, else the warm-up). A round whose
        checkpoint is gone is trained again (its step is forgotten, the one before it is loaded)."""
        for rnd in range(self.cfg.rounds, 0, -1):
            if self.done(f"round{rnd}.train") and self._load(f"round{rnd}.train"):
                states = load_checkpoint(self.checkpoint_path(f"round{rnd}.train")).get("methods")
                self.adjust = adjust_from(self.cfg.method, states)   # e.g. IA's priors, as the run that trained
                self.adjust_states = adjusting_states(build_methods(self.cfg.method), states)
                return
        if self.done("warmup") and any(self.done(f"round{r}.score") for r in range(1, self.cfg.rounds + 1)):
            if not self._load("warmup"):
                raise ConfigError("the warm-up checkpoint is gone as well as the rounds' ones: start a new run")

    def rounds(self) -> None:
        rows = []
        self.resume_model()
        for rnd in range(1, self.cfg.rounds + 1):
            t0 = time.time()
            round_id = storage.add_round(self.db, self.run_id, rnd, budget=str(self.budget), strategy=self.cfg.strategy)
            if self.done(f"round{rnd}.train"):
                miou = self.evaluate(rnd, f"round {rnd}")
                self.record_cost_error(rnd)
                stored = next((m for m in storage.metrics_table(self.db, self.run_id) if m["round"] == rnd), {})
                rows.append((rnd, stored.get("labeled_pct", self.labeled_pct()), miou, None))
                continue
            self.score_and_select(rnd, round_id)
            self.annotate(rnd, round_id)
            self.retrain(rnd)
            miou = self.evaluate(rnd, f"round {rnd}")
            self.record_cost_error(rnd)
            storage.set_round_status(self.db, round_id, "done")
            rows.append((rnd, self.labeled_pct(), miou, time.time() - t0))
            print(round_table(rows, self.budget, self.cfg))
        if rows and all(r[3] is None for r in rows):   # --resume of a finished run: say so, show its rounds
            print(round_table(rows, self.budget, self.cfg) + f"\n\nrun {self.run_id} had done all its rounds already "
                  f"(more rounds: --resume --rounds {self.cfg.rounds + 1})")
        self.metrics = rows


def _overlaps(box, picks) -> bool:
    """Whether box (y0, x0, y1, x1), end-exclusive, overlaps any region pick (y0, x0, y1, x1, ...)."""
    return any(box[0] < p[2] and p[0] < box[2] and box[1] < p[3] and p[1] < box[3] for p in picks)


def run_budget(cfg: RunConfig):
    """The run's budget per target image over all its rounds (a core.acquisition.Budget, or None):
    ``--budget``, scaled by rounds / budget_rounds when ``--resume --rounds`` extended the run."""
    if not cfg.budget:
        return None
    b = parse_budget(cfg.budget)
    return scale_budget(b, cfg.rounds / cfg.budget_rounds) if cfg.budget_rounds else b


def load_init(path: str, model: torch.nn.Module) -> dict:
    """The model weights of checkpoint ``path`` for ``model``; ConfigError naming what does not fit
    (class count, or the first layer whose shape differs: another backbone or head). A plain Segmentor's
    weights fit an HRDA model (its attention head keeps its initialisation) and the reverse."""
    try:
        state = state_for(model, load_checkpoint(path)["model"])
    except Exception as e:  # noqa: BLE001 - a wrong or corrupt file is a user mistake here
        raise ConfigError(f"--init {path} is not a checkpoint of this studio ({str(e).splitlines()[0]})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ConfigError(f"--init {path} was made with another --backbone or --head (it has no {missing[0]})")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            n = getattr(model, "num_classes", None)
            if v.shape[0] == n and tuple(state[k].shape[1:]) == tuple(v.shape[1:]):   # a classifier layer
                raise ConfigError(f"--init {path} was trained for {state[k].shape[0]} classes, but this run's target "
                                  f"has {v.shape[0]} classes: start from a checkpoint of a {v.shape[0]}-class run, "
                                  "or drop --init")
            raise ConfigError(f"--init {path}: {k} has shape {tuple(state[k].shape)} there but {tuple(v.shape)} in "
                              "this model (another --backbone, --head or --output-stride?)")
    return state


def round_table(rows, budget, cfg) -> str:
    out = [f"\nRounds ({cfg.strategy}, {budget}, radius {region_radius(cfg, query_mode(cfg, budget))}):\n",
           "| round | labeled pixels (% of target) | mIoU | seconds |", "|---:|---:|---:|---:|"]
    for r, pct, miou, sec in rows:
        out.append(f"| {r} | {pct:.3f} | {miou:.1f} | {'-' if sec is None else f'{sec:.0f}'} |")
    return "\n".join(out)


def reopen(workdir: str, cache_dir: str | None = None) -> ActiveSession:
    """The last run in ``workdir`` with its data and model, for export and standalone annotation."""
    if not (Path(workdir) / storage.DB_NAME).exists():
        raise ConfigError(f"{workdir} holds no project.db (run launch.py --workdir {workdir} first)")
    db = storage.open_store(workdir, create=False)
    if storage.last_run(db) is None:
        raise ConfigError(f"{workdir} holds no run yet")
    cfg = RunConfig(workdir=str(workdir), resume=True)
    if cache_dir:
        cfg.cache_dir = cache_dir
    s = ActiveSession(cfg, quiet=True)
    s.setup()
    return s


def run(cfg: RunConfig, given: set[str] | None = None) -> ActiveSession | None:
    """The whole run; ``given``: the options set on the command line (see ActiveSession)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and int(os.environ.get("RANK", 0)) != 0:
        follow(cfg)   # torchrun: rank 0 owns the store and the annotator; this rank computes with it
        return None
    s = ActiveSession(cfg, given=given)
    if s.budget is not None and not cfg.oracle:   # people answer: the annotator is open from the first second
        s.server = AnnotatorServer(s.workdir, target_label_space(cfg), s.cache, host=cfg.host, port=cfg.port,
                                   auth=cfg.auth, users_file=cfg.users_file)
        print(f"\nAnnotator open at {s.server.url}  (it shows the run's progress until round 1's queries are "
              "ready)\n", flush=True)
    try:
        if s.server is not None:
            s.server.status.phase("reading the data and building the model")
        s.setup()
        s.ranks.start("setup", config=stored_config(s.cfg), run_id=s.run_id)
        s.warmup()
        if s.budget is not None:
            s.rounds()
        s.ranks.start("end")
        storage.set_run_status(s.db, s.run_id, "done")
        storage.checkpoint_wal(s.db)     # project.db alone holds the finished run
        if s.server is not None:
            s.server.status.finish("The run has finished: its labels and metrics are in project.db (export them "
                                   "with launch.py export). You can close this page.")
            time.sleep(FINISH_GRACE_S)   # open pages show it and stop asking before the server goes
    finally:
        if s.server is not None:
            if not s.server.status.finished:   # an error or Ctrl-C: say so before the server goes
                s.server.status.finish("The run stopped (see its terminal); continue it with launch.py --resume")
            s.server.close()
    return s
