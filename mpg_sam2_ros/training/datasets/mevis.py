"""MeViS (motion expressions video segmentation).

Layout::

    root/meta_expressions.json   {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": [..],
                                                                            "anno_id": [..]}},
                                                   "frames": [name, ...]}}}
    root/mask_dict.json          {str(anno_id): [RLE or null, one per frame of the video]}
    root/JPEGImages/<vid>/<name>.jpg

RLEs are COCO's (``{"size": [h, w], "counts": str}``), decoded by pycocotools; ``null`` means
the object is not in that frame. An expression's masks are the union of its ``anno_id``s
(``ExpressionRecord.obj_ids`` holds the anno ids, not the per-video ``obj_id``s). A split
without ``mask_dict.json`` (valid) loads; its masks raise ``DatasetError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import (DatasetError, ExpressionRecord, ReferringSplit, VideoRecord, check_indices, image_size,
                   expression_entry, read_json, resolve_frames)
from .coco_masks import decode_rle
from .ytvos import _videos_of


class MeViS(ReferringSplit):
    """A MeViS split. See the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        super().__init__()
        self.root = Path(root)
        self.meta_path = self.root / "meta_expressions.json"
        self.frames_dir = self.root / "JPEGImages"
        self.mask_dict_path = self.root / "mask_dict.json"
        videos = _videos_of(read_json(self.meta_path, "meta expressions file"), self.meta_path)
        self.mask_dict: dict | None = None
        if self.mask_dict_path.is_file():
            data = read_json(self.mask_dict_path, "mask dictionary")
            if not isinstance(data, dict):
                raise DatasetError(f"{self.mask_dict_path}: expected an object {{anno_id: [RLE or null, ...]}}")
            self.mask_dict = data
        for vid in sorted(videos):
            try:
                self.videos.append(self._load_video(str(vid), videos[vid]))
            except DatasetError as exc:
                self.problems.append(f"skipped video {vid}: {exc}")
        self._index()

    def _load_video(self, vid: str, entry: object) -> VideoRecord:
        if not isinstance(entry, dict) or not isinstance(entry.get("expressions"), dict):
            raise DatasetError(f"{self.meta_path}: video {vid} needs an 'expressions' object")
        names, paths = resolve_frames(self.frames_dir / vid, entry.get("frames"), video=vid, listed_in=self.meta_path)
        exprs = []
        for exp_id, exp in entry["expressions"].items():
            where = f"{self.meta_path}: video {vid} expression {exp_id}"
            try:
                text, ids = expression_entry(exp, "anno_id", where=where)
                if self.mask_dict is not None:
                    if not ids:
                        raise DatasetError(f"{where}: refers to no object ('anno_id' missing or empty)")
                    self._check_annos(ids, len(names), where)
            except DatasetError as exc:
                self.problems.append(f"skipped expression: {exc}")
                continue
            exprs.append(ExpressionRecord(video=vid, exp_id=str(exp_id), text=text, obj_ids=ids))
        return VideoRecord(video=vid, frame_names=names, frame_paths=paths, expressions=exprs)

    def _check_annos(self, ids: tuple[int, ...], n_frames: int, where: str) -> None:
        assert self.mask_dict is not None
        for a in ids:
            rles = self.mask_dict.get(str(a))
            if rles is None:
                raise DatasetError(f"{self.mask_dict_path}: anno_id {a} (of {where}) not in the mask dictionary")
            if not isinstance(rles, list) or len(rles) != n_frames:
                raise DatasetError(f"{self.mask_dict_path}: anno_id {a} (of {where}) needs a list of {n_frames} "
                                   f"RLEs/nulls, one per frame, got {len(rles) if isinstance(rles, list) else type(rles).__name__}")
            if all(r is None for r in rles):
                raise DatasetError(f"{self.mask_dict_path}: anno_id {a} (of {where}) has a mask in no frame")

    def expression_masks(self, expr: ExpressionRecord, indices: Sequence[int]) -> np.ndarray:
        video = self.video(expr.video)
        idx = check_indices(video, indices)
        if self.mask_dict is None:
            raise DatasetError(f"{self.mask_dict_path}: not found (this split has no masks), no masks for "
                               f"{expr.video}/{expr.exp_id}")
        if not expr.obj_ids:
            raise DatasetError(f"{self.meta_path}: expression {expr.video}/{expr.exp_id} has no anno_id")
        out: dict[int, np.ndarray] = {}
        for i in dict.fromkeys(idx):
            h, w = image_size(video.frame_paths[i])
            mask = np.zeros((h, w), bool)
            for a in expr.obj_ids:
                rles = self.mask_dict.get(str(a))
                if not isinstance(rles, list) or len(rles) != len(video):
                    raise DatasetError(f"{self.mask_dict_path}: anno_id {a} missing or not one entry per frame")
                if rles[i] is None:
                    continue
                where = f"{self.mask_dict_path}: anno_id {a} frame {video.frame_names[i]}"
                m = decode_rle(rles[i], where=where)
                if m.shape != (h, w):
                    raise DatasetError(f"{where}: mask is {m.shape[1]}x{m.shape[0]} but the frame "
                                       f"{video.frame_paths[i]} is {w}x{h}")
                mask |= m
            out[i] = mask
        return np.stack([out[i] for i in idx])
