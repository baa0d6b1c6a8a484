"""COCO masks (RLE and polygons) decoded with ``pycocotools.mask``, never by hand.

pycocotools is imported on first use, so splits that need no RLE (Ref-YouTube-VOS) work
without it.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from .base import DatasetError


@contextlib.contextmanager
def _quiet():
    """pycocotools 2.0.x warns on NumPy 2 about its ``__array__`` signature on every decode."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        yield


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("MeViS and RefCOCO masks need pycocotools: pip install pycocotools") from exc
    return mask_api


def decode_rle(rle: object, *, where: str) -> np.ndarray:
    """One COCO RLE ``{"size": [h, w], "counts": str | list}`` -> bool [h, w]. Compressed
    counts (a string) are decoded directly, uncompressed ones (a list of run lengths,
    column-major, starting with background) through ``frPyObjects``. ``DatasetError``
    (``where`` names the file) for anything that is not a valid RLE."""
    mask_api = _mask_api()
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise DatasetError(f"{where}: expected an RLE object with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise DatasetError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    h, w = size
    counts = rle["counts"]
    try:
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise DatasetError(f"{where}: uncompressed RLE counts must be non-negative ints summing to {h}x{w}")
            coded = mask_api.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        elif isinstance(counts, (str, bytes)):
            coded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        else:
            raise DatasetError(f"{where}: RLE 'counts' must be a string or a list, got {type(counts).__name__}")
        with _quiet():
            mask = mask_api.decode(coded)
    except DatasetError:
        raise
    except Exception as exc:  # pycocotools raises plain Exception/ValueError/TypeError
        raise DatasetError(f"{where}: cannot decode RLE: {exc}") from exc
    if mask.shape != (h, w):
        raise DatasetError(f"{where}: RLE decodes to {mask.shape[1]}x{mask.shape[0]}, its size says {w}x{h}")
    return mask.astype(bool)


def decode_segmentation(seg: object, height: int, width: int, *, where: str) -> np.ndarray:
    """A COCO annotation's ``segmentation`` -> bool [height, width]: polygons (a list of
    [x0, y0, x1, y1, ...] lists, merged as pycocotools' ``annToMask`` does) or an RLE."""
    mask_api = _mask_api()
    if isinstance(seg, dict):
        mask = decode_rle(seg, where=where)
    elif isinstance(seg, list) and seg:
        for poly in seg:
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly)):
                raise DatasetError(f"{where}: a polygon must be a list of at least 3 (x, y) pairs")
        try:
            with _quiet():
                mask = mask_api.decode(mask_api.merge(mask_api.frPyObjects(seg, height, width)))
        except Exception as exc:
            raise DatasetError(f"{where}: cannot rasterise polygons: {exc}") from exc
    else:
        raise DatasetError(f"{where}: segmentation must be polygons or an RLE object")
    if mask.shape != (height, width):
        raise DatasetError(f"{where}: segmentation is {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}")
    return mask.astype(bool)
