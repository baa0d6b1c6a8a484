"""Ref-YouTube-VOS (and Ref-DAVIS17 converted to its layout).

Layout (``meta``, ``frames_dir`` and ``annotations_dir`` override the three locations; the
real Ref-YouTube-VOS keeps ``meta_expressions/<split>/meta_expressions.json`` apart)::

    root/meta_expressions.json    {"videos": {vid: {"expressions": {exp_id: {"exp": str, "obj_id": "1"}},
                                                    "frames": [name, ...]}}}
    root/JPEGImages/<vid>/<name>.jpg   (.jpeg / .png accepted)
    root/Annotations/<vid>/<name>.png  palette PNG, pixel value = object id (0 background)
    root/meta.json                 optional: {"videos": {vid: {"objects": {"1": {...}},
                                                              "expressions": {exp_id: {"type": str}}}}}

Without a ``frames`` list a video's frames are the images of its folder. Without an
annotation folder (valid/test splits) the split loads and ``expression_masks`` raises
``DatasetError``. When the split has annotations, every video needs a folder with one PNG per
frame. ``meta.json``'s ``objects`` (when given) is used to check the referred ids at load
time; otherwise an id that never occurs in any annotation of the video is found (by reading
the video's annotations once) when its masks are first asked for and come out empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .base import (DatasetError, ExpressionRecord, ReferringSplit, VideoRecord, check_indices, image_size,
                   expression_entry, parse_ids, read_json, resolve_frames)


class RefYouTubeVOS(ReferringSplit):
    """A Ref-YouTube-VOS style split. See the module docstring for the layout."""

    def __init__(self, root: str | Path, *, meta: str | Path | None = None, frames_dir: str | Path | None = None,
                 annotations_dir: str | Path | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.meta_path = Path(meta) if meta is not None else self.root / "meta_expressions.json"
        self.frames_dir = Path(frames_dir) if frames_dir is not None else self.root / "JPEGImages"
        self.annotations_dir = Path(annotations_dir) if annotations_dir is not None else self.root / "Annotations"
        if annotations_dir is not None and not self.annotations_dir.is_dir():
            raise DatasetError(f"{self.annotations_dir}: annotation folder not found")
        self.has_annotations = self.annotations_dir.is_dir()
        self.types_path = self.root / "meta.json"
        self._object_frames_cache: dict[str, dict[int, list[int]]] = {}

        videos = _videos_of(read_json(self.meta_path, "meta expressions file"), self.meta_path)
        types = _videos_of(read_json(self.types_path, "meta file"), self.types_path) if self.types_path.is_file() else {}
        for vid in sorted(videos):
            try:
                self.videos.append(self._load_video(str(vid), videos[vid], types.get(vid)))
            except DatasetError as exc:
                self.problems.append(f"skipped video {vid}: {exc}")
        self._index()

    # ----- loading ---------------------------------------------------------------------
    def _load_video(self, vid: str, entry: object, types: object) -> VideoRecord:
        if not isinstance(entry, dict) or not isinstance(entry.get("expressions"), dict):
            raise DatasetError(f"{self.meta_path}: video {vid} needs an 'expressions' object")
        if types is not None and not isinstance(types, dict):
            raise DatasetError(f"{self.types_path}: video {vid}: expected an object")
        names, paths = resolve_frames(self.frames_dir / vid, entry.get("frames"), video=vid, listed_in=self.meta_path)
        if self.has_annotations:
            folder = self.annotations_dir / vid
            if not folder.is_dir():
                raise DatasetError(f"{folder}: annotation folder of video {vid} not found")
            pngs = {p.stem for p in folder.iterdir() if p.suffix.lower() == ".png"}
            missing = [n for n in names if n not in pngs]
            if missing:
                raise DatasetError(f"{folder / (missing[0] + '.png')}: annotation not found "
                                   f"({len(missing)} of {len(names)} frames of video {vid} have none)")
        types = types or {}
        objects = types.get("objects")
        known = None
        if isinstance(objects, dict) and objects:
            known = set(parse_ids(list(objects), where=f"{self.types_path}: video {vid} objects"))
        exp_types = types.get("expressions") if isinstance(types.get("expressions"), dict) else {}
        exprs = []
        for exp_id, exp in entry["expressions"].items():
            where = f"{self.meta_path}: video {vid} expression {exp_id}"
            try:
                text, ids = expression_entry(exp, "obj_id", where=where)
                if known is not None and set(ids) - known:
                    raise DatasetError(f"{where}: object id(s) {sorted(set(ids) - known)} not among the video's "
                                       f"objects {sorted(known)} in {self.types_path}")
            except DatasetError as exc:
                self.problems.append(f"skipped expression: {exc}")
                continue
            t = exp_types.get(exp_id)
            exp_type = t.get("type") if isinstance(t, dict) and isinstance(t.get("type"), str) else None
            exprs.append(ExpressionRecord(video=vid, exp_id=str(exp_id), text=text, obj_ids=ids, exp_type=exp_type))
        return VideoRecord(video=vid, frame_names=names, frame_paths=paths, expressions=exprs)

    # ----- masks -----------------------------------------------------------------------
    def _label_path(self, video: VideoRecord, i: int) -> Path:
        return self.annotations_dir / video.video / f"{video.frame_names[i]}.png"

    def read_label(self, video: VideoRecord, i: int) -> np.ndarray:
        """The palette annotation of frame i: int [H, W] object ids. ``DatasetError`` naming
        the PNG when it is missing, not an indexed/grey image, or not the frame's size."""
        from PIL import Image

        path = self._label_path(video, i)
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L", "I", "I;16"):
                    raise DatasetError(f"{path}: annotation must be a palette (P) or grey PNG, got mode {im.mode}")
                label = np.asarray(im)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read annotation: {exc}") from exc
        h, w = image_size(video.frame_paths[i])
        if label.shape != (h, w):
            raise DatasetError(f"{path}: annotation is {label.shape[1]}x{label.shape[0]} but its frame "
                               f"{video.frame_paths[i]} is {w}x{h}")
        return label

    def _require_masks(self, expr: ExpressionRecord) -> VideoRecord:
        video = self.video(expr.video)
        if not self.has_annotations:
            raise DatasetError(f"{self.annotations_dir}: this split has no annotations, no masks for "
                               f"{expr.video}/{expr.exp_id}")
        if not expr.obj_ids:
            raise DatasetError(f"{self.meta_path}: expression {expr.video}/{expr.exp_id} has no obj_id")
        return video

    def object_frames(self, video: VideoRecord) -> dict[int, list[int]]:
        """object id -> indices of the frames where it occurs, from every annotation of the
        video (read once per video, then cached)."""
        table = self._object_frames_cache.get(video.video)
        if table is None:
            table = {}
            for i in range(len(video)):
                for obj in np.unique(self.read_label(video, i)).tolist():
                    if obj:
                        table.setdefault(int(obj), []).append(i)
            self._object_frames_cache[video.video] = table
        return table

    def _check_ever_present(self, video: VideoRecord, expr: ExpressionRecord, ids: set[int]) -> None:
        never = sorted(ids - set(self.object_frames(video)))
        if never:
            raise DatasetError(f"{self.annotations_dir / video.video}: object id(s) {never} of expression "
                               f"{expr.video}/{expr.exp_id} (in {self.meta_path}) occur in no annotation of the video")

    def expression_masks(self, expr: ExpressionRecord, indices: Sequence[int]) -> np.ndarray:
        video = self._require_masks(expr)
        idx = check_indices(video, indices)
        ids = np.asarray(expr.obj_ids)
        labels: dict[int, np.ndarray] = {}
        seen: set[int] = set()
        for i in dict.fromkeys(idx):
            label = self.read_label(video, i)
            mask = np.isin(label, ids)
            labels[i] = mask
            if mask.any():
                seen.update(int(o) for o in np.unique(label[mask]))
        missing = set(expr.obj_ids) - seen
        if missing:
            self._check_ever_present(video, expr, missing)
        return np.stack([labels[i] for i in idx])

    def frame_presence(self, expr: ExpressionRecord) -> np.ndarray:
        video = self._require_masks(expr)
        self._check_ever_present(video, expr, set(expr.obj_ids))
        table = self.object_frames(video)
        out = np.zeros(len(video), bool)
        for obj in expr.obj_ids:
            out[table[obj]] = True
        return out


class RefDAVIS17(RefYouTubeVOS):
    """Ref-DAVIS17 converted to the Ref-YouTube-VOS layout (as the official repositories
    do: ``meta_expressions.json``, ``JPEGImages/``, palette ``Annotations/``). Same reader."""


def _videos_of(data: object, path: Path) -> dict:
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise DatasetError(f"{path}: expected an object with a 'videos' object")
    return videos
