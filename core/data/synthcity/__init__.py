"""synthcity: the embedded, procedural two-domain street-scene benchmark (Cityscapes-19 classes).

No dataset can be downloaded here, so the project renders its own, modelled on GTA5 -> Cityscapes.
Both domains show the same kinds of things in the same real-world colour families; they differ in
appearance statistics, lighting, sensor and camera, and in the label shift:

* **source** domain (``split="train"`` only), a *game render*: its own asset library of the real
  materials (cleaner, a little more saturated) with crisp procedural textures (asphalt speckle,
  pavers, brick courses, panels, glazed windows, leaf blobs); game weather: on two thirds of the
  images a clear sunny sky, hard cast shadows and a shaded facade side, on one third overcast (a grey
  cloud deck, no cast shadows, milder grading); game-engine grading (saturation x1.3, contrast x1.12),
  distance haze, crisp aliased edges, lossless PNG, a low camera (horizon at ~42% of the height,
  1.2 m). Label map **and depth**.
* **target** domain (``split="train"|"val"``), a *photo*: muted materials with photographic grain,
  overcast sky, soft shadows on some days, uneven light and vignetting, one white balance, mild lens blur,
  sensor noise and JPEG artefacts (a clean automotive camera); a higher camera (horizon at ~50%,
  1.65 m) with an ego-vehicle hood (ignore); and a label shift (more persons, riders, bicycles and
  vegetation; fewer trucks and buses, ``layout._PRIORS``). Target labels exist for evaluation and the oracle only.

Version 2 replaced v1, whose source was flat pastel cartoons (pink facades, purple road, lime
terrain): a source-only model learned almost nothing from it (4.7 mIoU on target val). Version 3
added the source's overcast days and made the target camera cleaner. Version 4 gave the target camera
one white balance instead of a random colour cast per image. Version 5 lowered the target's sensor
noise and JPEG loss to a clean camera's (docs/DATASETS.md says why for each).

Every image is a pure function of ``(seed, domain, split, index, size)``: one numpy Generator
seeded with ``[seed, domain, split, index]``, so multiprocessing stays deterministic. Scenes are
built in metres with a pin-hole camera over a ground plane (road, sidewalks, verges), vertical
planes parallel to the road (facades, walls, fences, hedges, vehicle sides) and upright
billboards at a constant distance (poles, lights, signs, trees, people, bikes, vehicle
fronts/backs), painted far to near so occlusion agrees with the depth map.

On-disk layout (``ensure_synthcity`` returns ``<root>``)::

    <root>/meta.json                                written last; its presence marks a complete set
    <root>/source/images/src_00000.png              RGB as PNG
    <root>/source/labels/src_00000.png              uint8 trainIds, 255 = ignore
    <root>/source/depth/src_00000.png               uint16, centimetres (DEPTH_SCALE units per metre);
                                                    sky / farther than MAX_DEPTH saturates at 65535
    <root>/target/{train,val}/images/tgt_train_00000.jpg   the JPEG *is* the degradation step
    <root>/target/{train,val}/labels/tgt_train_00000.png

Class coverage is guaranteed: image ``i`` of every split features the class ``_FEATURED[i % 14]``
close to the camera (rare classes such as train, bus, wall), on top of the random content.

Modules: ``constants`` (version, sizes, class ids), ``raster`` (camera, canvas, billboards, planes,
shadow mask), ``palette`` (colour families per domain), ``layout`` (street layout and the label-shift
priors), ``textures`` (materials: plane shaders and ground textures per domain), ``scene`` (sky,
ground, planes), ``objects`` (people, vehicles, poles, trees ...), ``look`` (per-domain appearance),
``render`` (one image, no disk), ``cache`` (``ensure_synthcity``) and ``dataset`` (``SynthCity``).
"""
from .constants import DEFAULT_COUNTS, DEFAULT_SIZE, DEPTH_SCALE, MAX_DEPTH, VERSION
from .render import render_synthcity

__all__ = ["VERSION", "DEFAULT_SIZE", "DEFAULT_COUNTS", "DEPTH_SCALE", "MAX_DEPTH", "ensure_synthcity",
           "render_synthcity", "SynthCity"]

# the cache and the reader load on first use: rendering alone never imports them
_LAZY = {"ensure_synthcity": "cache", "_folder_name": "cache", "_norm_counts": "cache", "_gen_one": "cache",
         "SynthCity": "dataset"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
