"""RefCOCO / RefCOCO+ / RefCOCOg (referring expressions on COCO train2014 images).

Layout (the REFER toolkit's)::

    root/<dataset>/instances.json       COCO: images (id, file_name, height, width),
                                        annotations (id, image_id, segmentation: polygons or RLE)
    root/<dataset>/refs(<split_by>).json  preferred when present, else
    root/<dataset>/refs(<split_by>).p     a pickle of [{"ref_id", "ann_id", "image_id", "split",
                                                      "sentences": [{"sent": str, ...}], ...}]
    root/images/train2014/<file_name>   (or root/train2014/<file_name>)

``split_by`` defaults to ``unc`` for refcoco and refcoco+, ``umd`` for refcocog. A pickle is
code as much as data, so ``refs(...).p`` is read by ``load_plain_pickle``, which refuses every
global (no class, no function can be named, so nothing can be called) and therefore yields
only plain containers, strings and numbers; the JSON conversion is preferred when present.

Each (ref, sentence) pair is one ``ExpressionRecord`` (``exp_id = "<ref_id>_<k>"`` for the
k-th sentence, ``obj_ids = (ann_id,)``, ``text`` = the sentence's ``sent``); each image is a
one-frame ``VideoRecord`` named ``str(image_id)``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import (DatasetError, ExpressionRecord, ReferringSplit, VideoRecord, check_indices, image_size,
                   read_json)
from .coco_masks import decode_segmentation

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class _PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global: only plain containers, str, bytes, numbers,
    bools and None can come out of it."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: only plain data is accepted")


def load_plain_pickle(path: str | Path) -> object:
    """Unpickle a file holding only plain data (lists, dicts, tuples, sets, str, bytes,
    numbers, bools, None). Any global (class, function, ``os.system``...) is refused before
    it is imported. ``DatasetError`` naming the file for that and for any unreadable pickle."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    try:
        # Python 2 pickles (the REFER toolkit's) hold byte strings: decode them as UTF-8.
        return _PlainUnpickler(io.BytesIO(raw), encoding="utf-8").load()
    except Exception as exc:  # malformed pickles raise many kinds (UnpicklingError, EOFError, KeyError...)
        raise DatasetError(f"{path}: not a plain-data pickle ({type(exc).__name__}: {exc})") from exc


class RefCOCO(ReferringSplit):
    """One split (``train``, ``val``, ``testA``... or None for all) of RefCOCO/+/g. See the
    module docstring for the layout."""

    def __init__(self, root: str | Path, *, dataset: str = "refcoco", split: str | None = "train",
                 split_by: str | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.dataset, self.split = dataset, split
        if split_by is None:
            if dataset not in DEFAULT_SPLIT_BY:
                raise DatasetError(f"{self.root / dataset}: no default split_by for dataset {dataset!r}: "
                                   f"pass split_by (known defaults: {DEFAULT_SPLIT_BY})")
            split_by = DEFAULT_SPLIT_BY[dataset]
        self.split_by = split_by
        folder = self.root / dataset
        self.instances_path = folder / "instances.json"
        images, self.annotations = self._read_instances()
        self.images = images
        self.refs_path, refs = self._read_refs(folder)
        self.image_dir = next((d for d in (self.root / "images" / "train2014", self.root / "train2014") if d.is_dir()), None)
        if self.image_dir is None:
            raise DatasetError(f"{self.root / 'images' / 'train2014'}: image folder not found "
                               f"(also tried {self.root / 'train2014'})")

        by_image: dict[int, list[ExpressionRecord]] = {}
        for k, ref in enumerate(refs):
            if not isinstance(ref, dict):
                self.problems.append(f"skipped ref: {self.refs_path}: entry {k} is not an object")
                continue
            if split is not None and ref.get("split") != split:
                continue
            try:
                by_image.setdefault(self._image_of(ref, k), []).extend(self._expressions_of(ref, k))
            except DatasetError as exc:
                self.problems.append(f"skipped ref: {exc}")
        for image_id in sorted(by_image):
            info = images[image_id]
            path = self.image_dir / info["file_name"]
            self.videos.append(VideoRecord(video=str(image_id), frame_names=[Path(info["file_name"]).stem],
                                           frame_paths=[path], expressions=by_image[image_id]))
        self._index()

    # ----- loading ---------------------------------------------------------------------
    def _read_instances(self) -> tuple[dict[int, dict], dict[int, dict]]:
        data = read_json(self.instances_path, "COCO instances file")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
            raise DatasetError(f"{self.instances_path}: expected COCO instances with 'images' and 'annotations' lists")
        images, anns = {}, {}
        for im in data["images"]:
            if (isinstance(im, dict) and _is_int(im.get("id")) and isinstance(im.get("file_name"), str)
                    and _is_int(im.get("height")) and _is_int(im.get("width")) and im["height"] > 0 and im["width"] > 0):
                images[im["id"]] = im
            else:
                self.problems.append(f"skipped image: {self.instances_path}: malformed image entry "
                                     f"{im.get('id') if isinstance(im, dict) else im!r}")
        for ann in data["annotations"]:
            if isinstance(ann, dict) and _is_int(ann.get("id")) and _is_int(ann.get("image_id")) and "segmentation" in ann:
                anns[ann["id"]] = ann
            else:
                self.problems.append(f"skipped annotation: {self.instances_path}: malformed annotation entry "
                                     f"{ann.get('id') if isinstance(ann, dict) else ann!r}")
        return images, anns

    def _read_refs(self, folder: Path) -> tuple[Path, list]:
        json_path = folder / f"refs({self.split_by}).json"
        pickle_path = folder / f"refs({self.split_by}).p"
        if json_path.is_file():
            path, refs = json_path, read_json(json_path, "refs file")
        elif pickle_path.is_file():
            path, refs = pickle_path, load_plain_pickle(pickle_path)
        else:
            raise DatasetError(f"{pickle_path}: refs file not found (nor {json_path.name})")
        if not isinstance(refs, list):
            raise DatasetError(f"{path}: expected a list of refs, got {type(refs).__name__}")
        return path, refs

    def _image_of(self, ref: dict, k: int) -> int:
        where = f"{self.refs_path}: ref {ref.get('ref_id', f'#{k}')}"
        for key in ("ref_id", "ann_id", "image_id"):
            if not _is_int(ref.get(key)):
                raise DatasetError(f"{where}: '{key}' must be an integer")
        ann = self.annotations.get(ref["ann_id"])
        if ann is None:
            raise DatasetError(f"{where}: ann_id {ref['ann_id']} not in {self.instances_path}")
        if ann["image_id"] != ref["image_id"]:
            raise DatasetError(f"{where}: ann_id {ref['ann_id']} belongs to image {ann['image_id']} in "
                               f"{self.instances_path}, the ref says {ref['image_id']}")
        info = self.images.get(ref["image_id"])
        if info is None:
            raise DatasetError(f"{where}: image_id {ref['image_id']} not in {self.instances_path}")
        path = self.image_dir / info["file_name"]
        if not path.is_file():
            raise DatasetError(f"{path}: image of ref {ref['ref_id']} not found")
        return ref["image_id"]

    def _expressions_of(self, ref: dict, k: int) -> list[ExpressionRecord]:
        sents = ref.get("sentences")
        where = f"{self.refs_path}: ref {ref['ref_id']}"
        if not isinstance(sents, list) or not sents:
            raise DatasetError(f"{where}: needs a non-empty 'sentences' list")
        out = []
        for j, s in enumerate(sents):
            if not isinstance(s, dict) or not isinstance(s.get("sent"), str) or not s["sent"].strip():
                self.problems.append(f"skipped sentence: {where} sentence {j}: needs a non-empty 'sent' string")
                continue
            out.append(ExpressionRecord(video=str(ref["image_id"]), exp_id=f"{ref['ref_id']}_{j}", text=s["sent"],
                                        obj_ids=(ref["ann_id"],)))
        return out

    # ----- masks -----------------------------------------------------------------------
    def expression_masks(self, expr: ExpressionRecord, indices: Sequence[int]) -> np.ndarray:
        video = self.video(expr.video)
        idx = check_indices(video, indices)
        info = self.images[int(expr.video)]
        h, w = info["height"], info["width"]
        actual = image_size(video.frame_paths[0])
        if actual != (h, w):
            raise DatasetError(f"{video.frame_paths[0]}: image is {actual[1]}x{actual[0]} but {self.instances_path} "
                               f"says {w}x{h}")
        mask = np.zeros((h, w), bool)
        for ann_id in expr.obj_ids:
            ann = self.annotations[ann_id]
            mask |= decode_segmentation(ann["segmentation"], h, w,
                                        where=f"{self.instances_path}: annotation {ann_id}")
        return np.stack([mask] * len(idx))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
