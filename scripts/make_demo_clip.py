"""Writes the bundled demo clip (assets/demo_clip) and its ground truth (assets/demo_clip_gt):
a red ball moving right and a blue square moving down over a textured background."""

import sys
from pathlib import Path

import cv2
import numpy as np


def make(out: Path, gt: Path, n: int = 12, w: int = 160, h: int = 120) -> None:
    rng = np.random.default_rng(0)
    background = (rng.integers(90, 160, size=(h // 8, w // 8, 3))).astype(np.uint8)
    background = cv2.resize(background, (w, h), interpolation=cv2.INTER_LINEAR)
    out.mkdir(parents=True, exist_ok=True)
    (gt / "red_ball").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = background.copy()
        cx, cy = 20 + i * 10, 70
        cv2.rectangle(img, (100, 10 + i * 5), (125, 35 + i * 5), (40, 40, 220), -1)  # BGR blue square
        mask = np.zeros((h, w), np.uint8)
        cv2.circle(mask, (cx, cy), 14, 255, -1)
        img[mask > 0] = (30, 30, 220)  # BGR red
        cv2.imwrite(str(out / f"frame_{i:04d}.png"), img)
        cv2.imwrite(str(gt / "red_ball" / f"frame_{i:04d}.png"), mask)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "assets"
    make(root / "demo_clip", root / "demo_clip_gt")
