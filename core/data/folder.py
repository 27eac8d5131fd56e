"""Generic image folder dataset, plus the file-backed machinery every real dataset shares.

Layout of a folder dataset (``ImageFolder``)::

    ROOT/images/<stem>.{png,jpg,jpeg,bmp,tif,tiff,webp}
    ROOT/masks/<stem>.png        optional; single-channel class ids (8/16-bit grey or palette)
    ROOT/classes.json            optional; [{"name", "id", "color": [r,g,b]}, ...]
    # or, with splits:  ROOT/images/<split>/..., ROOT/masks/<split>/...

Mask values are *dataset ids* of the label space, mapped to trainIds on load; 255 = unlabeled:

- with ``classes.json``: the ``id`` of each class (see core.data.labels.load_classes_json);
- without it: the label space is Cityscapes-19 and masks hold Cityscapes **labelIds** (0..33), mapped
  by cityscapesscripts' table (void ids such as 0..6 become 255) -- the same files Cityscapes'
  ``*_gtFine_labelIds.png`` and this project's export write.
- ``mask_format="train_ids"`` reads masks that already hold trainIds (0..N-1, 255); on the command
  line ``--mask-format train_ids``. Masks that look like trainIds while read as Cityscapes labelIds
  (most pixels on the void labelIds 0..6, no value above 18) log a warning naming the switch.

Mask files: 8/16-bit grey, palette (the indices are the ids), 1-bit (values 0/1) or grey+alpha whose
alpha is fully opaque (the grey value is the id; transparent pixels are ambiguous and refused).

Any other value is an error naming the file (``unknown_ids="ignore"`` maps them to 255 instead).

The shared base ``FileDataset`` implements the dataset contract of core.data.base for every
file-backed dataset (GTA5, SYNTHIA, Cityscapes, folder):

- Sizes and orientation (one rule for every kind): a label (and a depth map) must have exactly its
  image's stored size, H x W, or the sample is refused with a DatasetError naming the file and both
  sizes (``skip_bad`` drops such pairs). Pixels are read on the stored grid: EXIF orientation tags
  are ignored for images and masks alike (a warning names images that carry one), so masks must be
  drawn on the stored, un-rotated pixels. ``check_sizes()`` checks every pair from file headers.
  Sizes in messages are H x W, as every option takes them.
- ``size=(H, W)``: images are resized to it on load (area interpolation when shrinking, bilinear when
  enlarging); ``None`` keeps the native size.
- ``label_size``: ``None`` -> the label is resized (nearest) to the returned image's size;
  ``"full"`` -> the label at its native (full) resolution, the one evaluation and annotation budgets
  use; ``(H, W)`` -> resized (nearest) to that size.
- ``cache_dir``: resized images/labels/depth are stored under ``cache_dir/datasets/`` (PNG, or ``.npy``
  images with ``cache_format="npy"``), keyed by the source file's path, mtime and byte size plus the
  output size and the id mapping, so an edited file is re-read. Decoding a 2048x1024 PNG costs
  ~65 ms; reading the cached resized copy is several times cheaper.
- Validation: construction checks the layout cheaply (folders, pairing, counts) and raises
  ``DatasetError`` with one line naming the file and the problem; files are decoded lazily and a bad
  one raises ``DatasetError`` on load. ``validate()`` scans every file. With ``skip_bad=True`` bad
  files are dropped and reported instead (``ds.skipped``), and a file that fails on load is replaced
  by the next good sample (with a logged warning) so a training run keeps going.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from PIL import Image

from core.progress import bar as progress_bar
from core.data.base import DatasetError
from core.fileio import atomic_write
from core.data.labels import (CITYSCAPES19, IGNORE, LabelSpace, LabelSpaceError, cityscapes_id_to_train,
                              load_classes_json)

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CACHE_VERSION = "1"
# Cityscapes labelIds stored in *_labelIds.png files (license plate, id -1, is never drawn into them).
CITYSCAPES_LABEL_IDS = range(0, 34)


# ----------------------------------------------------------------------------------------------- io

def _check_size(size, what: str):
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise DatasetError(f"{what} must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise DatasetError(f"{what} must be positive, got {size!r}")
    return (h, w)


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read file ({e.strerror or e})") from None
    if data.size == 0:
        raise DatasetError(f"{path}: empty file")
    return data


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H,W,3) RGB; grey and 16-bit images are converted; EXIF orientation is ignored so the
    pixels line up with masks drawn on the stored image."""
    img = cv2.imdecode(_read_bytes(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        h, w = header_size(path)     # a readable header: say whether the decode limit was the reason
        _check_pixels(path, h, w)
        raise DatasetError(f"{path}: cannot decode image (corrupt, truncated or not an image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_ORIENTATION = 0x0112   # EXIF tag
# The one pixel limit of every decode (cv2's own default, 2**30): PIL's decompression-bomb guard
# (89 Mpx warning, 179 Mpx error) would refuse valid large masks and panoramas that cv2 reads.
MAX_PIXELS = int(os.environ.get("SEGSTUDIO_MAX_PIXELS", 2 ** 30))
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))   # OpenCV's decodes follow the same limit
_ORIENTATION_NAMES = {2: "mirrored", 3: "rotated 180", 4: "flipped", 5: "transposed", 6: "rotated 90",
                      7: "transverse", 8: "rotated 270"}


class _no_bomb_guard:
    """PIL's decompression-bomb check replaced by ``MAX_PIXELS`` (checked by the callers on the
    header size) while any of our reads is open; counted, so concurrent validation threads agree."""

    _lock = threading.Lock()
    _depth = 0
    _saved = None

    def __enter__(self):
        with _no_bomb_guard._lock:
            if _no_bomb_guard._depth == 0:
                _no_bomb_guard._saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            _no_bomb_guard._depth += 1

    def __exit__(self, *exc):
        with _no_bomb_guard._lock:
            _no_bomb_guard._depth -= 1
            if _no_bomb_guard._depth == 0:
                Image.MAX_IMAGE_PIXELS = _no_bomb_guard._saved


def _check_pixels(path: Path, h: int, w: int) -> None:
    if h * w > MAX_PIXELS:
        raise DatasetError(f"{path}: {h}x{w} is {h * w / 1e6:.0f} Mpx, over the {MAX_PIXELS / 1e6:.0f} Mpx decode "
                           f"limit; set the environment variable SEGSTUDIO_MAX_PIXELS to a larger pixel count")


_INDEX_MODES = ("P", "L", "I;16", "I;16B", "I;16L", "I")


def read_index_image(path: Path) -> np.ndarray:
    """A single-channel class-id image as uint8/uint16 (H,W): 8/16-bit grey, palette indices, 1-bit
    (0/1), or grey+alpha / palette+alpha with a fully opaque alpha (its grey value or index is the id).
    Raises DatasetError naming the file and mode for colour images and for alpha with transparent
    pixels (unlabeled or not is ambiguous)."""
    try:
        with _no_bomb_guard(), Image.open(path) as im:
            mode = im.mode
            _check_pixels(path, im.size[1], im.size[0])
            if mode == "1":
                arr = np.asarray(im.convert("L")) // 255
            elif mode in ("LA", "PA", "La"):
                a = np.asarray(im)
                if (a[..., 1] != 255).any():
                    raise DatasetError(f"{path}: label is a {mode} image (ids + alpha) with transparent pixels; "
                                       "whether they are unlabeled is ambiguous: save the ids without alpha "
                                       "(unlabeled = 255)")
                arr = a[..., 0]
            elif mode in _INDEX_MODES:
                arr = np.asarray(im)
            else:
                raise DatasetError(f"{path}: label must be a single-channel image of class ids (grey, palette, 1-bit "
                                   f"or grey+alpha), got a {mode} image")
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: label file not found") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise DatasetError(f"{path}: cannot decode label image, corrupt or truncated ({e})") from None
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DatasetError(f"{path}: label values outside 0..65535")
        arr = arr.astype(np.uint16)
    return np.ascontiguousarray(arr)


def read_first_channel(path: Path, what: str = "image") -> np.ndarray:
    """First channel (R) of a PNG at its stored bit depth (uint8 or uint16), via cv2.IMREAD_UNCHANGED.
    cv2 returns BGR(A), so the file's first channel is index 2 for 3/4-channel files."""
    a = cv2.imdecode(_read_bytes(path), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise DatasetError(f"{path}: cannot decode {what} (corrupt, truncated or not an image file)")
    if a.ndim == 3:
        a = a[:, :, 2] if a.shape[2] >= 3 else a[:, :, 0]
    return np.ascontiguousarray(a)


def header_info(path: Path) -> tuple[int, int, int]:
    """(H, W, EXIF orientation) from the file header (cheap: no pixel decoding). The orientation is
    1 (none) when the file has no tag; it is read only where EXIF sits in the header (JPEG, TIFF,
    WebP, or a PNG whose eXIf chunk precedes the pixels): PIL's getexif() would decode a whole PNG
    to look for it. Very large images are not refused here: nothing is decoded."""
    try:
        with _no_bomb_guard(), Image.open(path) as im:
            w, h = im.size
            orient = 1
            if im.format in ("JPEG", "MPO", "TIFF", "WEBP") or "exif" in im.info:
                try:
                    orient = int(im.getexif().get(_ORIENTATION, 1) or 1)
                except Exception:  # a broken EXIF block is not a broken image
                    orient = 1
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable image file ({e})") from None
    return h, w, orient


def header_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header (cheap: no pixel decoding, no EXIF)."""
    try:
        with _no_bomb_guard(), Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable image file ({e})") from None
    return h, w


def verify_file(path: Path) -> tuple[int, int]:
    """Check a file's structure; (H, W). PNG: PIL verify (chunk CRCs, truncation) without decoding
    pixels; other formats (where verify checks little): a full PIL decode."""
    try:
        with _no_bomb_guard(), Image.open(path) as im:
            w, h = im.size
            _check_pixels(path, h, w)
            if im.format == "PNG":
                im.verify()
            else:
                im.load()
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as e:
        raise DatasetError(f"{path}: corrupt or truncated image file ({e})") from None
    return h, w


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W,3) uint8 -> ``size`` (h, w): area interpolation when shrinking both sides, bilinear otherwise.
    The one image resize rule of the project (datasets, training scale, the annotator's view)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    shrink = h <= img.shape[0] and w <= img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_label(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize (OpenCV's INTER_NEAREST_EXACT: the pixel under each output centre) of a label,
    depth map or mask to ``size`` (h, w); the one label resize rule. Sparse active labels use
    ``core.data.transforms.resize_sparse_label``, which keeps every labeled pixel."""
    h, w = size
    if a.shape[:2] == (h, w):
        return a
    return cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)


def list_files(folder: Path, exts: Iterable[str]) -> list[Path]:
    exts = tuple(e.lower() for e in exts)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in exts)


def stems(folder: Path, what: str, exts=(".png",)) -> dict[str, Path]:
    """``{stem: path}`` of the ``exts`` files in ``folder``; DatasetError naming the folder when none."""
    found = {p.stem: p for p in list_files(folder, exts)}
    if not found:
        raise DatasetError(f"{folder}: no {what} ({', '.join('*' + e for e in exts)})")
    return found


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} is not a folder")
    return path


# ----------------------------------------------------------------------------------------- id maps

class IdMap:
    """Raw label value (uint8 or uint16) -> trainId lookup, and the set of values a label file may hold.

    255 is always allowed and means unlabeled. Values outside ``valid`` raise DatasetError naming the
    file (``unknown="error"``) or become 255 (``unknown="ignore"``)."""

    def __init__(self, table: dict[int, int], valid: Iterable[int], describe: str, unknown: str = "error"):
        if unknown not in ("error", "ignore"):
            raise DatasetError(f"unknown_ids must be 'error' or 'ignore', got {unknown!r}")
        self.lut = np.full(65536, IGNORE, np.uint8)
        self.valid = np.zeros(65536, bool)
        for k, v in table.items():
            self.lut[k] = v
        self.valid[list(valid)] = True
        self.valid[IGNORE] = True
        self.lut[IGNORE] = IGNORE
        self.unknown = unknown
        self.describe = describe
        invalid = np.flatnonzero(~self.valid)
        self._contig_max = int(invalid[0]) - 1 if invalid.size else 65535  # 0..this are all valid
        h = hashlib.sha1(self.lut.tobytes() + self.valid.tobytes() + unknown.encode())
        self.signature = h.hexdigest()[:16]

    def unknown_values(self, raw: np.ndarray) -> np.ndarray:
        if raw.size == 0 or int(raw.max()) <= self._contig_max:
            return np.zeros(0, np.int64)
        if raw.dtype == np.uint8:
            vals = np.flatnonzero(np.bincount(raw.ravel(), minlength=256))
        else:
            vals = np.unique(raw)
        return vals[~self.valid[vals]]

    def __call__(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.unknown == "error":
            bad = self.unknown_values(raw)
            if bad.size:
                shown = ", ".join(str(int(v)) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
                raise DatasetError(f"{path}: unknown label id(s) {shown} (expected {self.describe})")
        return self.lut[raw]


def cityscapes_id_map(label_space: LabelSpace = CITYSCAPES19, unknown: str = "error") -> IdMap:
    """Cityscapes labelIds (0..33, as in GTA5 labels and *_gtFine_labelIds.png) -> trainIds of
    ``label_space``, whose class ids must be Cityscapes labelIds (CITYSCAPES19, SYNTHIA16). For
    Cityscapes-19 this is cityscapesscripts' table (``cityscapes_id_to_train``); void ids -> 255."""
    if label_space.name == CITYSCAPES19.name:
        lut = cityscapes_id_to_train()
        table = {i: int(lut[i]) for i in CITYSCAPES_LABEL_IDS}
    else:
        if any(c.id not in CITYSCAPES_LABEL_IDS for c in label_space.classes):
            raise DatasetError(f"label space {label_space.name!r} does not use Cityscapes labelIds")
        table = {c.id: c.train_id for c in label_space.classes}
    return IdMap(table, CITYSCAPES_LABEL_IDS, "Cityscapes labelIds 0..33 or 255", unknown)


def label_space_id_map(label_space: LabelSpace, unknown: str = "error") -> IdMap:
    """Ids of a user label space (classes.json ``id``) -> train ids; only those ids and 255 allowed."""
    table = {c.id: c.train_id for c in label_space.classes}
    ids = sorted(table)
    shown = ", ".join(map(str, ids[:12])) + (" ..." if len(ids) > 12 else "")
    return IdMap(table, ids, f"the class ids of {label_space.name} ({shown}) or 255", unknown)


def train_id_map(label_space: LabelSpace, unknown: str = "error") -> IdMap:
    n = label_space.num_classes
    return IdMap({i: i for i in range(n)}, range(n), f"train ids 0..{n - 1} or 255, as --mask-format train_ids reads them", unknown)


# ------------------------------------------------------------------------------------------- cache

class ResizeCache:
    """Pre-resized arrays under ``root``, keyed by source path + mtime + byte size + an ``extra`` string.
    Writes are atomic (temp file + rename), so concurrent loader workers may share one cache."""

    def __init__(self, root: str | Path, image_format: str = "png"):
        if image_format not in ("png", "npy"):
            raise DatasetError(f"cache_format must be 'png' or 'npy', got {image_format!r}")
        self.root = Path(root) / "datasets"
        self.image_format = image_format
        self._write_failed = False

    def key(self, what: str, src: Path, extra: str) -> str:
        try:
            st = os.stat(src)
        except OSError as e:
            raise DatasetError(f"{src}: cannot read file ({e.strerror or e})") from None
        ident = f"{CACHE_VERSION}|{what}|{os.path.abspath(src)}|{st.st_mtime_ns}|{st.st_size}|{extra}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def _path(self, key: str, ext: str) -> Path:
        return self.root / key[:2] / f"{key}.{ext}"

    def get(self, key: str, fmt: str = "png", rgb: bool = False) -> np.ndarray | None:
        p = self._path(key, fmt)
        if not p.exists():
            return None
        try:
            if fmt == "npy":
                return np.load(p, allow_pickle=False)
            a = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_UNCHANGED)
            if a is None:
                return None
            return cv2.cvtColor(a, cv2.COLOR_BGR2RGB) if rgb else a
        except Exception:  # a damaged cache entry is rebuilt from the source
            return None

    def put(self, key: str, arr: np.ndarray, fmt: str = "png", rgb: bool = False) -> None:
        if self._write_failed:
            return
        try:
            if fmt == "npy":
                data = lambda f: np.save(f, arr, allow_pickle=False)  # noqa: E731
            else:
                ok, buf = cv2.imencode(".png", cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if rgb else arr,
                                       [cv2.IMWRITE_PNG_COMPRESSION, 1])
                if not ok:
                    raise OSError("PNG encoding failed")
                data = buf.tobytes()
            atomic_write(self._path(key, fmt), data, fsync=False)
        except OSError as e:
            self._write_failed = True
            log.warning("dataset cache %s is not writable (%s); continuing without it", self.root, e)


# -------------------------------------------------------------------------------------- base class

@dataclass(frozen=True)
class Item:
    name: str
    image: Path
    label: Path | None = None
    depth: Path | None = None


class FileDataset:
    """A list of (image, label, depth) files behind the dataset contract (see the module docstring)."""

    kind = "files"

    def __init__(self, root: str | Path, items: Sequence[Item], label_space: LabelSpace, id_map: IdMap, *,
                 size=None, label_size=None, cache_dir: str | Path | None = None, cache_format: str = "png",
                 skip_bad: bool = False, problems: Sequence[str] = (), depth_scale: float = 1.0):
        self.root = Path(root)
        self.label_space = label_space
        self.id_map = id_map
        self.size = _check_size(size, "size")
        if label_size is not None and label_size != "full":
            label_size = _check_size(label_size, "label_size")
        self.label_size = label_size
        self.cache = ResizeCache(cache_dir, cache_format) if cache_dir is not None else None
        self.skip_bad = bool(skip_bad)
        self.depth_scale = float(depth_scale)
        self.skipped: list[str] = []
        self._warned: set[str] = set()
        if problems:
            if not self.skip_bad:
                more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
                raise DatasetError(f"{problems[0]}{more}")
            self.skipped.extend(problems)
            log.warning("%s: skipped %d bad file(s); first: %s", self.root, len(problems), problems[0])
        self._set_items(items)
        if not self.items:
            raise DatasetError(f"{self.root}: no usable {self.kind} samples" + (" (all skipped as bad)" if problems else ""))

    # -- sequence ------------------------------------------------------------------------------
    def _set_items(self, items: Sequence[Item]) -> None:
        self.items = list(items)
        self._names = [it.name for it in self.items]

    @property
    def names(self) -> list[str]:
        return self._names

    @property
    def has_labels(self) -> bool:
        """True when every sample has a label file (otherwise unlabeled samples get all-255 labels)."""
        return all(it.label is not None for it in self.items)

    @property
    def has_depth(self) -> bool:
        return bool(self.items) and all(it.depth is not None for it in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        g = lambda k, d=None: getattr(self, k, d)  # noqa: E731  (also usable half-constructed)
        return (f"{type(self).__name__}(root={str(g('root', ''))!r}, n={len(g('items', ()))}, "
                f"size={g('size')}, label_size={g('label_size')!r})")

    def _index(self, i: int) -> int:
        n = len(self.items)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return i

    def __getitem__(self, i: int) -> dict:
        i = self._index(i)
        if not self.skip_bad:
            return self.load(i)
        n = len(self.items)
        for k in range(n):
            j = (i + k) % n
            try:
                return self.load(j)
            except DatasetError as e:
                msg = str(e)
                if msg not in self._warned:
                    self._warned.add(msg)
                    self.skipped.append(msg)
                    log.warning("skipping bad sample %s: %s", self.items[j].name, msg)
        raise DatasetError(f"{self.root}: no readable sample left (all {n} failed to load)")

    # -- loading -------------------------------------------------------------------------------
    def load(self, i: int) -> dict:
        """The sample at ``i`` (raises DatasetError for a bad file, whatever ``skip_bad``)."""
        it = self.items[self._index(i)]
        img = self.image(i)
        sample = {"image": img, "name": it.name}
        sample["label"] = self._label(it, self._label_target(img.shape[:2]), img)
        if it.depth is not None:
            sample["depth"] = self._depth(it, img.shape[:2])
        return sample

    def _label_target(self, image_hw):
        if self.label_size is None:
            return tuple(image_hw)
        return self.label_size

    def image(self, i: int) -> np.ndarray:
        """uint8 (H,W,3) RGB at ``size`` (native when size is None)."""
        it = self.items[self._index(i)]
        if self.size is None:
            return read_rgb(it.image)
        h, w = self.size
        fmt = self.cache.image_format if self.cache else "png"
        key = self.cache.key("image", it.image, f"{h}x{w}") if self.cache else None
        if key is not None:
            cached = self.cache.get(key, fmt, rgb=True)
            if cached is not None and cached.shape == (h, w, 3):
                return cached
        img = resize_image(read_rgb(it.image), self.size)
        if key is not None:
            self.cache.put(key, img, fmt, rgb=True)
        return img

    def label(self, i: int, size="full") -> np.ndarray:
        """uint8 (H,W) trainIds of sample ``i`` at ``size``: "full" (native) or (H, W) (nearest)."""
        it = self.items[self._index(i)]
        target = size if size == "full" else _check_size(size, "size")
        return self._label(it, target, None)

    def _read_label_raw(self, path: Path) -> np.ndarray:
        return read_index_image(path)

    def _label(self, it: Item, target, img: np.ndarray | None) -> np.ndarray:
        if it.label is None:
            hw = target if target != "full" else header_size(it.image)
            return np.full(hw, IGNORE, np.uint8)
        key = None
        if target != "full":
            h, w = target
            key = self.cache.key("label", it.label, f"{h}x{w}|{self.id_map.signature}") if self.cache else None
            if key is not None:   # written only after the size check below passed
                cached = self.cache.get(key, "png")
                if cached is not None and cached.shape == (h, w) and cached.dtype == np.uint8:
                    return cached
        raw = self._read_label_raw(it.label)
        native = img.shape[:2] if (img is not None and self.size is None) else None
        self._check_pair(it, it.label, raw.shape[:2], "label", native)
        lab = self.id_map(raw, it.label)
        if target == "full":
            return lab
        lab = resize_label(lab, target)
        if key is not None:
            self.cache.put(key, lab, "png")
        return lab

    def _check_pair(self, it: Item, path: Path, hw, what: str, image_hw=None) -> None:
        """DatasetError unless ``hw`` (a label's or depth map's H, W) is the stored size of its image."""
        ih, iw = image_hw if image_hw is not None else header_size(it.image)
        if tuple(hw) == (ih, iw):
            return
        orient = header_info(it.image)[2]   # only for the hint below
        hint = ""
        if orient in _ORIENTATION_NAMES and tuple(hw) == (iw, ih):
            hint = (f"; the image carries EXIF orientation {orient} ({_ORIENTATION_NAMES[orient]}), which is "
                    f"ignored: draw the {what} on the stored pixels, or save the image rotated")
        raise DatasetError(f"{path}: {what} is {hw[0]}x{hw[1]} (HxW) but its image {it.image.name} is {ih}x{iw}; "
                           f"a {what} must have its image's size{hint}")

    def _depth(self, it: Item, hw) -> np.ndarray:
        h, w = hw
        key = self.cache.key("depth", it.depth, f"{h}x{w}") if self.cache else None
        raw = self.cache.get(key, "png") if key is not None else None
        if raw is None or raw.shape != (h, w):
            raw = resize_label(read_first_channel(it.depth, "depth map"), (h, w))
            if key is not None:
                self.cache.put(key, raw, "png")
        return raw.astype(np.float32) * np.float32(self.depth_scale)

    # -- validation ----------------------------------------------------------------------------
    def check(self, i: int, full: bool = False) -> None:
        """Check sample ``i``: file structure (PIL verify), image/label/depth sizes, and with ``full``
        a complete decode including unknown label ids (and, with a cache, fills it)."""
        it = self.items[self._index(i)]
        ihw = verify_file(it.image)
        for p, what in ((it.label, "label"), (it.depth, "depth map")):
            if p is not None:
                self._check_pair(it, p, verify_file(p), what, ihw)
        if full:
            self.load(i)

    def check_sizes(self, progress: bool = True, workers: int | None = None) -> list[str]:
        """Every label and depth map has its image's size, read from file headers (about 0.1 ms a
        file, nothing decoded); images carrying an EXIF orientation tag are named in one warning.
        Raises DatasetError for the first mismatch, or with ``skip_bad`` drops those samples and
        returns the problems (also appended to ``self.skipped``)."""
        def one(i: int) -> tuple[str | None, int]:
            it = self.items[i]
            try:
                ih, iw, orient = header_info(it.image)
                for p, what in ((it.label, "label"), (it.depth, "depth map")):
                    if p is not None:
                        self._check_pair(it, p, header_size(p), what, (ih, iw))
            except DatasetError as e:
                return str(e), 1
            return None, orient

        n = len(self.items)
        bad, rotated = [], []
        with ThreadPoolExecutor(max(1, workers or min(4, os.cpu_count() or 1))) as ex:
            for i, (problem, orient) in enumerate(progress_bar(ex.map(one, range(n)), total=n, disable=not progress or n < 500,
                                                       desc=f"check {self.kind} sizes", unit="img")):
                if problem is not None:
                    if not self.skip_bad:
                        raise DatasetError(problem + " (--skip-bad drops such samples)")
                    bad.append((i, problem))
                elif orient != 1:
                    rotated.append(self.items[i].image)
        if rotated:
            warn_orientation(rotated)
        return self._drop(bad)

    def validate(self, progress: bool = True, skip_bad: bool | None = None, full: bool = False,
                 workers: int | None = None) -> list[str]:
        """Scan every file. Default: structure only (PIL verify: truncation, CRC errors, not-an-image;
        plus size checks), ~ms per file. ``full=True`` also decodes every file and checks label ids.

        Raises DatasetError on the first bad file, unless ``skip_bad`` (default: the dataset's
        ``skip_bad``): then bad samples are removed from the dataset and the list of problems
        ("FILE: problem") is returned (also appended to ``self.skipped``)."""
        skip = self.skip_bad if skip_bad is None else bool(skip_bad)
        n = len(self.items)
        workers = workers or min(4, os.cpu_count() or 1)

        def one(i: int) -> str | None:
            try:
                self.check(i, full)
            except DatasetError as e:
                return str(e)
            return None


        bad: list[tuple[int, str]] = []
        ex = ThreadPoolExecutor(max(1, workers))
        try:
            results = ex.map(one, range(n))
            for i, problem in enumerate(progress_bar(results, total=n, disable=not progress,
                                             desc=f"validate {self.kind}", unit="img")):
                if problem is not None:
                    if not skip:
                        ex.shutdown(wait=False, cancel_futures=True)
                        raise DatasetError(problem)
                    bad.append((i, problem))
        finally:
            ex.shutdown(wait=True, cancel_futures=True)
        return self._drop(bad)

    def _drop(self, bad: list[tuple[int, str]]) -> list[str]:
        if not bad:
            return []
        drop = {i for i, _ in bad}
        self._set_items([it for k, it in enumerate(self.items) if k not in drop])
        problems = [p for _, p in bad]
        self.skipped.extend(problems)
        log.warning("%s: skipped %d bad sample(s); first: %s", self.root, len(bad), problems[0])
        if not self.items:
            raise DatasetError(f"{self.root}: every sample is bad; first: {problems[0]}")
        return problems


def warn_orientation(paths: Sequence[Path]) -> None:
    """One warning naming images whose EXIF orientation tag is ignored (pixels are used as stored)."""
    log.warning("%d image(s) carry an EXIF orientation tag, which is ignored: images and masks are used on their "
                "stored pixel grid (the annotator shows them un-rotated); first: %s", len(paths), paths[0])


def _warn_if_train_ids(masks: Sequence[Path], mask_dir: Path, id_map: IdMap) -> None:
    """Warn when masks read as Cityscapes labelIds look like trainIds: no value above 18 (labelId masks
    hold sky 23, person 24, car 26...) and over a quarter of the labeled pixels on void labelIds
    (trainIds road 0 ... pole 5, sky 10 are void labelIds). Reads at most the few masks given;
    unreadable ones are left to the loader's error."""
    void = total = top = 0
    for p in masks:
        try:
            a = read_index_image(p)
        except DatasetError:
            return
        labeled = a != IGNORE
        void += int((id_map.lut[a] == IGNORE)[labeled].sum())
        total += int(labeled.sum())
        top = max(top, int(a[labeled].max(initial=0)))
    if total and void > total / 4 and top <= 18:
        log.warning("%s: masks are read as Cityscapes labelIds, but %.0f%% of their labeled pixels fall on void "
                    "labelIds and none is above 18: they look like trainIds; if so, pass --mask-format train_ids",
                    mask_dir, 100.0 * void / total)


def pair_by_stem(images: dict[str, Path], labels: dict[str, Path], expected_label, what: str = "label"):
    """Items for images with a label; problems for images without one."""
    items, problems = [], []
    for stem, img in images.items():
        lab = labels.get(stem)
        if lab is None:
            problems.append(f"{img}: no {what} file (expected {expected_label(stem)})")
        else:
            items.append(Item(stem, img, lab))
    return items, problems


# --------------------------------------------------------------------------------------- the folder

def folder_label_space(root: str | Path, default: LabelSpace | None = None) -> LabelSpace:
    """The label space of a folder dataset: its ``classes.json`` when there is one, else ``default``
    (Cityscapes-19). Read alone, without the images (e.g. to open the annotator before the data).
    DatasetError for a malformed classes.json or one that uses the ignore id 255."""
    cj = Path(root) / "classes.json"
    if not cj.exists():
        return default or CITYSCAPES19
    try:
        space = load_classes_json(cj)
    except LabelSpaceError as e:
        raise DatasetError(str(e)) from None
    if any(c.id == IGNORE for c in space.classes):
        raise DatasetError(f"{cj}: id 255 is reserved for unlabeled pixels; give the class another id")
    return space


class ImageFolder(FileDataset):
    """Images in ``root/images`` with optional masks in ``root/masks`` and an optional ``classes.json``.

    ``split``: when ``images/<split>/`` exists, that subfolder (and ``masks/<split>/``) is used;
    otherwise every split is the whole flat folder (the unlabeled pool is also what is evaluated).
    ``size=None`` keeps native sizes and requires all images to be the same size (mixed sizes raise
    DatasetError naming the sizes: give ``size=(H, W)``, ``--target-size HxW`` on the command line, and
    every image is resized to it). Masks must have their image's size; they are returned at that
    size with ``label_size="full"`` (what the command line uses, as for Cityscapes: evaluation and
    budgets at the labels' own resolution), otherwise resized (nearest) to the returned image. Without ``masks/`` the dataset is unlabeled
    (``has_labels`` False, labels all 255); with it, every image needs a mask unless
    ``require_labels=False`` (then images without one are unlabeled). ``label_space`` is the one used
    without ``classes.json`` (default Cityscapes-19; its masks hold Cityscapes labelIds)."""

    kind = "folder"

    def __init__(self, root: str | Path, split: str | None = None, size=None, label_size=None, *,
                 label_space: LabelSpace | None = None, mask_format: str = "ids", require_labels: bool = True,
                 unknown_ids: str = "error", cache_dir=None, cache_format: str = "png", skip_bad: bool = False):
        root = require_dir(Path(root), "folder dataset")
        img_root = require_dir(root / "images", "folder dataset: images/ folder")
        self.split = split
        if split and (img_root / split).is_dir():
            img_dir, mask_dir = img_root / split, root / "masks" / split
        else:
            img_dir, mask_dir = img_root, root / "masks"

        cj = root / "classes.json"
        self.classes_json = cj if cj.exists() else None
        label_space = folder_label_space(root, label_space)
        if mask_format == "train_ids":
            id_map = train_id_map(label_space, unknown_ids)
        elif mask_format == "ids":
            if self.classes_json is None and label_space.name in (CITYSCAPES19.name, "synthia16"):
                id_map = cityscapes_id_map(label_space, unknown_ids)
            else:
                id_map = label_space_id_map(label_space, unknown_ids)
        else:
            raise DatasetError(f"mask_format must be 'ids' or 'train_ids', got {mask_format!r}")

        files = list_files(img_dir, IMAGE_EXTS)
        if not files:
            raise DatasetError(f"{img_dir}: no images ({', '.join('*' + e for e in IMAGE_EXTS)})")
        images: dict[str, Path] = {}
        for p in files:
            if p.stem in images:
                raise DatasetError(f"{p}: two images share the name {p.stem!r} ({images[p.stem].name}); names must be unique")
            images[p.stem] = p

        problems: list[str] = []
        if mask_dir.is_dir():
            masks = {p.stem: p for p in list_files(mask_dir, (".png",))}
            items = []
            for stem, img in images.items():
                m = masks.get(stem)
                if m is None and require_labels:
                    problems.append(f"{img}: no mask (expected {mask_dir / (stem + '.png')}; "
                                    f"once masks/ exists every image needs one: add it, or move the image out of images/)")
                else:
                    items.append(Item(stem, img, m))
        else:
            items = [Item(stem, img, None) for stem, img in images.items()]

        # image headers: native sizes (they must agree unless size is given, or batches cannot be
        # formed) and EXIF orientation tags (ignored: named in one warning)
        sizes: dict[tuple[int, int], list[Path]] = {}
        kept, rotated = [], []
        for it in items:
            try:
                h, w, orient = header_info(it.image)
            except DatasetError as e:
                problems.append(str(e))
                continue
            sizes.setdefault((h, w), []).append(it.image)
            kept.append(it)
            if orient != 1:
                rotated.append(it.image)
        items = kept
        if rotated:
            warn_orientation(rotated)
        if size is None and len(sizes) > 1:
            common = Counter({hw: len(v) for hw, v in sizes.items()}).most_common()
            odd = sizes[common[-1][0]][0]
            summary = ", ".join(f"{c} at {h}x{w}" for (h, w), c in common[:4])
            raise DatasetError(f"{odd}: mixed image sizes in {img_dir} ({summary}, HxW); resize them to one "
                               f"training size with --target-size HxW (labels keep their own size)")
        if mask_format == "ids" and self.classes_json is None and label_space.name == CITYSCAPES19.name:
            _warn_if_train_ids([it.label for it in items if it.label is not None][:3], mask_dir, id_map)
        super().__init__(root, items, label_space, id_map, size=size, label_size=label_size,
                         cache_dir=cache_dir, cache_format=cache_format, skip_bad=skip_bad, problems=problems)
