"""Where bag-replay results go, the same for the in-process engine and for ``--live``:
``masks/object_K/<name>.png``, the result bag, ``overlay.mp4``, ``frames.csv``, and the scores
(J and F per frame with ``core.evaluation``'s own functions, the code of ``mpg-sam2 eval``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.evaluation import boundary_f, read_mask, region_similarity
from ..core.io import write_mask
from ..core.render import Drawn, draw_overlay
from .bags import (BagMessage, DecodeError, ResultBag, deserialize, header, mono8_message, segmentation_message,
                   stamp_name, stamp_of)
from .groundtruth import GroundTruth


@dataclass
class FrameRecord:
    """One input image message, in bag order. ``name``: its file stem in masks/ and gt/."""

    index: int
    recv_ns: int
    stamp: tuple[int, int]
    frame_id: str
    name: str
    skipped: str | None = None      # reason, when it could not be used
    error: str | None = None        # the message of that reason
    dropped: bool = False           # never processed: a newer frame replaced it (real-time pace)
    processed: bool = False         # given to the model
    output: bool = False            # a result was produced for it
    latency_ms: float | None = None
    jf: dict[int, float] = field(default_factory=dict)   # object id -> J&F (0..100) when ground truth exists
    present: dict[int, bool] = field(default_factory=dict)


@dataclass
class ObjectScore:
    J: list[float] = field(default_factory=list)
    F: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        if not self.J:
            return {"J": None, "F": None, "J&F": None, "frames": 0}
        j, f = 100 * float(np.mean(self.J)), 100 * float(np.mean(self.F))
        return {"J": round(j, 4), "F": round(f, 4), "J&F": round((j + f) / 2, 4), "frames": len(self.J)}


class ResultSink:
    """Collects every frame record and writes each result as it comes (memory stays bounded:
    masks go to disk, only per-frame numbers are kept)."""

    def __init__(self, out: Path, texts: list[str], gt: GroundTruth | None, bag: ResultBag | None, *,
                 fps: float, caption: str) -> None:
        self.out, self.texts, self.gt, self.bag = out, texts, gt, bag
        self.fps, self.caption = fps, caption
        self.records: list[FrameRecord] = []
        self.scores = {k: ObjectScore() for k in range(len(texts))}
        self.used_names: set[str] = set()
        self.duplicate_names: list[str] = []
        self.size_mismatch: list[str] = []
        self._video: cv2.VideoWriter | None = None
        self._video_size: tuple[int, int] | None = None
        self.video_frames = 0

    def add_input(self, rec: FrameRecord, raw: bytes) -> None:
        self.records.append(rec)
        if self.bag is not None:
            self.bag.write_image(rec.recv_ns, raw)

    def read_input(self, m: BagMessage, msgtype: str) -> tuple[Any | None, FrameRecord]:
        """Deserialise one stored image message and record it (its bytes go to the result bag
        either way); the message is None when it cannot be read, and the record says why."""
        try:
            msg = deserialize(m.raw, msgtype)
            stamp, frame_id = stamp_of(msg), str(msg.header.frame_id)
        except DecodeError as exc:
            rec = FrameRecord(m.index, m.recv_ns, (0, 0), "", f"corrupt-{m.index}", skipped=exc.reason, error=str(exc))
            self.add_input(rec, m.raw)
            return None, rec
        name = self.gt.frame_name(m.index, stamp) if self.gt is not None else stamp_name(stamp)
        rec = FrameRecord(m.index, m.recv_ns, stamp, frame_id, name)
        self.add_input(rec, m.raw)
        return msg, rec

    def mask_path(self, k: int, name: str) -> Path:
        return self.out / "masks" / f"object_{k}" / f"{name}.png"

    def add_output(self, rec: FrameRecord, rgb: np.ndarray, objects: list[Drawn], *, latency_ms: float,
                   frame_index: int, stream_reset: bool, raw_mask: bytes | None = None,
                   raw_segmentation: bytes | None = None) -> None:
        """One result. objects: one per expression (ids 0..K-1; absent ones with an empty mask).
        raw_*: the node's own messages (``--live``), else they are built here as the node does."""
        rec.output, rec.latency_ms = True, latency_ms
        name = rec.name
        if name in self.used_names:  # e.g. a stamp loop: keep both, the later one suffixed
            self.duplicate_names.append(name)
            name = f"{name}-{rec.index}"
        self.used_names.add(name)
        h, w = rgb.shape[:2]
        by_id = {o.object_id: o for o in objects}
        for k in range(len(self.texts)):
            o = by_id.get(k)
            mask = o.mask if o is not None and o.present else np.zeros((h, w), bool)
            rec.present[k] = bool(o is not None and o.present)
            write_mask(self.mask_path(k, name), mask)
            if self.gt is not None and name == rec.name and self.gt.has(k, name):
                gt = self.gt.load(k, name)
                pred = mask
                if gt.shape != mask.shape:  # scored as an empty prediction, as mpg-sam2 eval does
                    self.size_mismatch.append(f"object_{k}/{name}")
                    pred = np.zeros_like(gt)
                j, f = region_similarity(pred, gt), boundary_f(pred, gt)
                self.scores[k].J.append(j)
                self.scores[k].F.append(f)
                rec.jf[k] = 50.0 * (j + f)
        if self.bag is not None:
            hdr = header(rec.stamp, rec.frame_id)
            if raw_mask is None:
                union = np.zeros((h, w), bool)
                for o in objects:
                    if o.present:
                        union |= o.mask
                raw_mask = mono8_message(union, hdr)
            if raw_segmentation is None:
                raw_segmentation = segmentation_message(hdr, frame_index, stream_reset, latency_ms, [
                    {"object_id": o.object_id, "text": o.text, "mask": o.mask if o.present else np.zeros((h, w), bool),
                     "score": o.score, "present": o.present} for o in objects])
            self.bag.write_result(rec.recv_ns, raw_mask, raw_segmentation)
        self._write_video(draw_overlay(rgb, objects, latency_ms=latency_ms, caption=self.caption))

    def _write_video(self, picture: np.ndarray) -> None:
        h, w = picture.shape[:2]
        if self._video is None:
            self._video_size = (w + w % 2, h + h % 2)
            self._video = cv2.VideoWriter(str(self.out / "overlay.mp4"), cv2.VideoWriter_fourcc(*"mp4v"),
                                          float(self.fps), self._video_size)
        if (w, h) != self._video_size:  # a resolution change mid-bag: fit the first size
            picture = cv2.resize(picture, self._video_size, interpolation=cv2.INTER_AREA)
        self._video.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self.video_frames += 1

    def hold_last_scores(self) -> dict[int, ObjectScore]:
        """Every frame with ground truth, scored with the last result published before it (what
        a consumer that keeps the newest mask holds; empty before the first result)."""
        scores = {k: ObjectScore() for k in range(len(self.texts))}
        if self.gt is None:
            return scores
        last: str | None = None
        held: dict[int, np.ndarray] = {}  # object -> the last result's mask, read once per result
        for rec in self.records:
            if rec.output:
                last = rec.name
                held.clear()
            for k in range(len(self.texts)):
                if not self.gt.has(k, rec.name):
                    continue
                gt = self.gt.load(k, rec.name)
                if last is not None and k not in held:
                    held[k] = read_mask(self.mask_path(k, last))
                pred = held[k] if last is not None else np.zeros_like(gt)
                if pred.shape != gt.shape:
                    pred = np.zeros_like(gt)
                scores[k].J.append(region_similarity(pred, gt))
                scores[k].F.append(boundary_f(pred, gt))
        return scores

    def write_frames_csv(self) -> Path:
        path = self.out / "frames.csv"
        ks = range(len(self.texts))
        with path.open("w", newline="") as fh:
            wr = csv.writer(fh)
            wr.writerow(["index", "stamp", "recv_ns", "status", "latency_ms"]
                        + [f"jf_object_{k}" for k in ks] + [f"present_object_{k}" for k in ks])
            for r in self.records:
                status = ("skipped:" + r.skipped) if r.skipped else "dropped" if r.dropped else \
                    "output" if r.output else "processed" if r.processed else "pending"
                wr.writerow([r.index, f"{r.stamp[0]}.{r.stamp[1]:09d}", r.recv_ns, status,
                             "" if r.latency_ms is None else f"{r.latency_ms:.2f}"]
                            + ["" if k not in r.jf else f"{r.jf[k]:.3f}" for k in ks]
                            + ["" if k not in r.present else int(r.present[k]) for k in ks])
        return path

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        if self.bag is not None:
            self.bag.close()


def object_scores(scores: dict[int, ObjectScore], texts: list[str]) -> tuple[dict, dict[str, Any]]:
    """(per object dict, overall J/F/J&F = mean over objects with ground truth, as eval does)."""
    per = {str(k): {"text": texts[k], **s.as_dict()} for k, s in scores.items()}
    scored = [s for s in scores.values() if s.J]
    if not scored:
        return per, {"J": None, "F": None, "J&F": None}
    j = 100 * float(np.mean([np.mean(s.J) for s in scored]))
    f = 100 * float(np.mean([np.mean(s.F) for s in scored]))
    return per, {"J": round(j, 4), "F": round(f, 4), "J&F": round((j + f) / 2, 4)}
