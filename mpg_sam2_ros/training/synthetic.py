"""Synthetic referring-video benchmark: seeded procedural videos with referring expressions
that need temporal context (``mpg-sam2 make-synthetic``, ``mpg-sam2 bench-accuracy``).

Each video shows several coloured shapes moving over a textured background with camera
shake/pan, lighting drift, noise and sometimes blur; objects occlude each other and leave
and re-enter the frame. Its expressions come in four types, each with at least one
distractor that makes it non-trivial:

- ``appearance`` "the small green triangle": another object shares the colour or the shape
  (or the colour and shape at another size, when the size word is what tells them apart);
- ``spatial`` "the blue star on the left": two objects identical in appearance, apart in place
  (the relation holds in every frame);
- ``motion`` "the red circle moving up": two or three objects identical in appearance that
  differ only in motion (left/right/up/down, growing/shrinking, standing still, bouncing), so
  one frame cannot tell them apart and the window must;
- ``absent`` "the orange hexagon": an object, with an appearance distractor, that is out of
  the frame in part of the video (it enters late, leaves, or leaves and comes back); the
  output must be empty there (the presence score).

Not generated: expressions whose truth needs the future ("the square that stops"): a streaming
model cannot answer them before the event, so they would measure the look-ahead, not the window.

The split is written in the Ref-YouTube-VOS layout so that training and evaluation read it
through the real loader (``training.datasets.RefYouTubeVOS``)::

    OUT/JPEGImages/<video>/<frame>.png   (lossless; .jpg with jpeg=True)
    OUT/Annotations/<video>/<frame>.png  (palette PNG, pixel = object id, visible part only)
    OUT/meta_expressions.json            {"videos": {v: {"expressions": {id: {"exp", "obj_id"}}, "frames": [...]}}}
    OUT/meta.json                        {"videos": {v: {"objects": {...}, "expressions": {id: {"type", "target",
                                          "distractors", "absent_frames"}}}}, "generator": {...}}

Video ``i`` of seed ``S`` depends only on (S, i): the same seed gives the same bytes, and a
split of N videos is the prefix of a split of M > N videos.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
COLORS: dict[str, tuple[int, int, int]] = {  # RGB
    "red": (215, 40, 40),
    "green": (40, 170, 65),
    "blue": (45, 80, 215),
    "yellow": (230, 210, 40),
    "purple": (140, 55, 185),
    "orange": (245, 135, 30),
    "white": (238, 238, 232),
    "pink": (245, 125, 185),
}
SIZES = {"small": 0.07, "big": 0.115}  # radius as a fraction of min(H, W)
TEXTURES = ("plain", "striped", "dotted")
LINEAR = ("left", "right", "up", "down")
MOTIONS = LINEAR + ("still", "grow", "shrink", "bounce")
EXPRESSION_TYPES = ("appearance", "spatial", "motion", "absent")
LONG_VIDEO = 48  # longer videos have no growing/shrinking objects (they would not stay sane)

MOTION_PHRASES = {
    "left": ("moving to the left", "moving left", "going to the left"),
    "right": ("moving to the right", "moving right", "going to the right"),
    "up": ("moving up", "going up", "moving upwards"),
    "down": ("moving down", "going down", "moving downwards"),
    "still": ("standing still", "that is not moving", "that stays in place"),
    "grow": ("that is growing", "getting bigger", "growing"),
    "shrink": ("that is shrinking", "getting smaller", "shrinking"),
    "bounce": ("bouncing around", "bouncing off the walls", "that bounces"),
}
SPATIAL_PHRASES = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top", "higher up"),
    "bottom": ("at the bottom", "lower down"),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """frames: video length T; width/height: frame size; max_tries: rejection sampling budget."""

    frames: int = 24
    width: int = 160
    height: int = 120
    max_tries: int = 200

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError("a synthetic video needs at least 2 frames")
        if not (48 <= self.width <= 4096 and 48 <= self.height <= 4096):
            raise ValueError(f"frame size {self.width}x{self.height}: each side must be in 48..4096")


@dataclass
class SynObject:
    """One object: appearance, motion, and its world trajectory (centre x, y and radius r per frame)."""

    oid: int
    color: str
    shape: str
    size: str
    texture: str
    motion: str
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    depth: float = 0.0
    rgb: tuple[int, int, int] = (0, 0, 0)

    @property
    def category(self) -> str:
        return f"{self.color} {self.shape}"

    def same_look(self, other: "SynObject") -> bool:
        return (self.color, self.shape, self.size, self.texture) == (other.color, other.shape, other.size, other.texture)

    def differences(self, other: "SynObject") -> str:
        """What tells two look-alikes apart, as the probes group them: "color", "shape", "size"
        or several joined by "+" in that order; "texture" when none of those differ."""
        return "+".join(k for k in ("color", "shape", "size") if getattr(self, k) != getattr(other, k)) or "texture"


@dataclass
class SynExpression:
    text: str
    type: str
    target: int
    distractors: list[int]
    absent_frames: int = 0


@dataclass
class SynVideo:
    """A rendered video: frames uint8 [T, H, W, 3] RGB, labels uint8 [T, H, W] (0 background,
    else the id of the object visible there)."""

    name: str
    frames: np.ndarray
    labels: np.ndarray
    objects: list[SynObject]
    expressions: list[SynExpression]
    stats: dict = field(default_factory=dict)


class _Reject(Exception):
    """The sampled layout breaks a constraint; sample again."""


# ----- trajectories ---------------------------------------------------------------------
def _wrap(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return lo + np.mod(p - lo, hi - lo)


def _bounce(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _trajectory(motion: str, cfg: SyntheticConfig, r0: float, rng: np.random.Generator, *,
                in_frame: bool = True, speed: float | None = None, start: tuple[float, float] | None = None):
    """x, y, r arrays [T] in frame coordinates. Linear motion stays in the frame when
    ``in_frame`` and the path fits, else it wraps around outside the frame (leaves and
    re-enters after a gap)."""
    t = np.arange(cfg.frames, dtype=np.float64)
    w, h = cfg.width, cfg.height
    r = np.full(cfg.frames, r0)
    if motion in ("grow", "shrink"):
        factor = rng.uniform(1.6, 1.9)
        e = t / max(1, cfg.frames - 1) - 0.5  # identical radius at mid-clip for grow and shrink twins
        r = r0 * factor ** (e if motion == "grow" else -e)
    rmax = float(r.max())

    def pick(lo: float, hi: float) -> float:
        if hi < lo:
            raise _Reject
        return float(rng.uniform(lo, hi))

    if motion in LINEAR:
        horizontal = motion in ("left", "right")
        extent = w if horizontal else h
        sign = -1.0 if motion in ("left", "up") else 1.0
        v = speed if speed is not None else rng.uniform(2.4, 3.6) * min(w, h) / 120
        travel = v * (cfg.frames - 1)
        fits = travel <= extent - 2 * rmax - 2
        if in_frame and not fits:
            raise _Reject
        other = pick(rmax + 1, (h if horizontal else w) - rmax - 1)
        if fits and in_frame:
            s0 = pick(rmax + 1 + (travel if sign < 0 else 0), extent - rmax - 1 - (travel if sign > 0 else 0))
            along = s0 + sign * v * t
        else:
            gap = rng.uniform(0.1, 0.4) * extent
            s0 = pick(-rmax, extent + rmax)
            along = _wrap(s0 + sign * v * t, -rmax - gap / 2, extent + rmax + gap / 2)
        if start is not None:
            along = along - along[0] + (start[0] if horizontal else start[1])
            other = start[1] if horizontal else start[0]
        x, y = (along, np.full_like(t, other)) if horizontal else (np.full_like(t, other), along)
        return x, y, r
    if motion == "bounce":
        unit = min(w, h) / 120
        vx = rng.uniform(2.0, 3.2) * unit * rng.choice([-1, 1])
        vy = rng.uniform(2.0, 3.2) * unit * rng.choice([-1, 1])
        x0 = pick(rmax + 1, w - rmax - 1) if start is None else start[0]
        y0 = pick(rmax + 1, h - rmax - 1) if start is None else start[1]
        return _bounce(x0 + vx * t, rmax + 1, w - rmax - 1), _bounce(y0 + vy * t, rmax + 1, h - rmax - 1), r
    # still / grow / shrink: fixed centre
    if start is not None:
        x0, y0 = start
    else:
        x0, y0 = pick(rmax + 1, w - rmax - 1), pick(rmax + 1, h - rmax - 1)
    return np.full_like(t, x0), np.full_like(t, y0), r


# ----- rendering ------------------------------------------------------------------------
def _polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray | None:
    if shape == "circle":
        return None
    if shape == "square":
        s = r * 0.86
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "diamond":
        pts = [(0, -r), (0.8 * r, 0), (0, r), (-0.8 * r, 0)]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a) + 0.15 * r) for a in np.deg2rad([-90, 30, 150])]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else 0.45 * r) * math.cos(a), (r if k % 2 == 0 else 0.45 * r) * math.sin(a))
               for k, a in enumerate(np.deg2rad(np.arange(-90, 270, 36)))]
    elif shape == "hexagon":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in np.deg2rad(np.arange(0, 360, 60))]
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.array([[(cx + px) * 16, (cy + py) * 16] for px, py in pts], dtype=np.int32)


def _shape_mask(shape: str, cx: float, cy: float, r: float, size_hw: tuple[int, int]) -> np.ndarray:
    m = np.zeros(size_hw, np.uint8)
    if shape == "circle":
        cv2.circle(m, (int(round(cx * 16)), int(round(cy * 16))), int(round(r * 16)), 1, -1, lineType=cv2.LINE_8, shift=4)
    else:
        cv2.fillPoly(m, [_polygon(shape, cx, cy, r)], 1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth two-colour gradient with faint clutter (low-contrast blobs and lines)."""
    c0, c1 = rng.uniform(60, 190, 3), rng.uniform(60, 190, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    g = (g - g.min()) / max(1e-6, g.max() - g.min())
    img = c0[None, None] * (1 - g[..., None]) + c1[None, None] * g[..., None]
    coarse = rng.uniform(-18, 18, size=(max(2, h // 12), max(2, w // 12), 3)).astype(np.float32)
    img += cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(2, 6))):
        tone = img.mean(axis=(0, 1)) + rng.uniform(-25, 25, 3)
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p1, p2, tone.tolist(), int(rng.integers(1, 3)))
        else:
            axes = (int(rng.integers(4, max(5, w // 6))), int(rng.integers(3, max(4, h // 6))))
            cv2.ellipse(img, p1, axes, float(rng.uniform(0, 180)), 0, 360, tone.tolist(), -1)
    return img


def _texture(kind: str, cx: float, cy: float, size_hw: tuple[int, int], phase: float) -> np.ndarray:
    """Per-pixel brightness factor [H, W] of a texture that moves with the object."""
    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "striped":
        return np.where(np.mod((xx - cx) + (yy - cy) + phase, 6.0) < 3.0, 1.0, 0.62).astype(np.float32)
    if kind == "dotted":
        dots = (np.mod(xx - cx + phase, 5.0) < 2.0) & (np.mod(yy - cy + phase, 5.0) < 2.0)
        return np.where(dots, 1.3, 1.0).astype(np.float32)
    return np.ones((h, w), np.float32)


def render(objects: list[SynObject], cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and labels uint8 [T, H, W]. Objects live in world coordinates;
    a camera pans slowly and shakes; the frame is a crop of a padded canvas."""
    w, h, n = cfg.width, cfg.height, cfg.frames
    pad = max(4, min(w, h) // 12)
    ch, cw = h + 2 * pad, w + 2 * pad
    background = _background(ch, cw, rng)
    pan = rng.uniform(-0.25, 0.25, 2)
    shake = rng.uniform(0.0, 1.2)
    offsets = np.stack([pan * i for i in range(n)]) + rng.normal(0, shake, size=(n, 2)) if shake > 0 else np.zeros((n, 2))
    offsets = np.clip(offsets, -pad + 1, pad - 1)
    light_amp, light_period, light_phase = rng.uniform(0, 0.15), rng.uniform(12, 48), rng.uniform(0, 2 * np.pi)
    tint = rng.uniform(-0.06, 0.06, 3)
    noise_sigma = rng.uniform(1.0, 5.0)
    blur_sigma = rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 0.0
    tex_phase = {o.oid: rng.uniform(0, 6) for o in objects}
    frames = np.empty((n, h, w, 3), np.uint8)
    labels = np.zeros((n, h, w), np.uint8)
    order = sorted(objects, key=lambda o: o.depth)
    for i in range(n):
        ox, oy = offsets[i]
        canvas = background.copy()
        lab = np.zeros((ch, cw), np.uint8)
        for o in order:  # back to front
            cx, cy = o.x[i] + pad - ox, o.y[i] + pad - oy
            m = _shape_mask(o.shape, cx, cy, o.r[i], (ch, cw))
            if not m.any():
                continue
            shade = _texture(o.texture, cx, cy, (ch, cw), tex_phase[o.oid])[m]
            canvas[m] = np.clip(np.array(o.rgb, np.float32)[None] * shade[:, None], 0, 255)
            lab[m] = o.oid
        img = canvas[pad : pad + h, pad : pad + w]
        gain = 1.0 + light_amp * math.sin(2 * math.pi * i / light_period + light_phase)
        img = img * (gain * (1.0 + tint * i / max(1, n - 1)))[None, None]
        if blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
        img = img + rng.normal(0, noise_sigma, img.shape)
        frames[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        labels[i] = lab[pad : pad + h, pad : pad + w]
    return frames, labels


# ----- layout and expressions -----------------------------------------------------------
class _Layout:
    """Samples the objects of one video group by group, each group with its expressions."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.objects: list[SynObject] = []
        self.expressions: list[SynExpression] = []
        self.looks: set[tuple[str, str]] = set()  # (colour, shape) already used by a group

    def radius(self, size: str) -> float:
        return SIZES[size] * min(self.cfg.width, self.cfg.height) * self.rng.uniform(0.92, 1.08)

    def new_object(self, color, shape, size, texture, motion, traj, rgb=None) -> SynObject:
        x, y, r = traj
        rgb = rgb if rgb is not None else tuple(int(np.clip(c + self.rng.integers(-12, 13), 0, 255)) for c in COLORS[color])
        o = SynObject(len(self.objects) + 1, color, shape, size, texture, motion, x, y, r, float(self.rng.random()), rgb)
        self.objects.append(o)
        return o

    def fresh_look(self, *, share_with: SynObject | None = None) -> tuple[str, str]:
        """A (colour, shape) no group uses yet; with ``share_with``, sharing its colour or its shape."""
        rng = self.rng
        for _ in range(50):
            if share_with is not None:
                if rng.random() < 0.5:
                    look = (share_with.color, str(rng.choice(SHAPES)))
                else:
                    look = (str(rng.choice(list(COLORS))), share_with.shape)
            else:
                look = (str(rng.choice(list(COLORS))), str(rng.choice(SHAPES)))
            if look not in self.looks:
                self.looks.add(look)
                return look
        raise _Reject

    def motion_group(self) -> None:
        rng, cfg = self.rng, self.cfg
        color, shape = self.fresh_look()
        size, texture = str(rng.choice(list(SIZES))), str(rng.choice(TEXTURES))
        allowed = [m for m in MOTIONS if cfg.frames <= LONG_VIDEO or m not in ("grow", "shrink")]
        k = 3 if rng.random() < 0.25 else 2
        motions = [str(m) for m in rng.choice(allowed, size=k, replace=False)]
        r0 = self.radius("small") * 1.2 if any(m in ("grow", "shrink") for m in motions) else self.radius(size)
        rgb = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLORS[color])
        group = [self.new_object(color, shape, size, texture, m,
                                 _trajectory(m, cfg, r0, rng, in_frame=cfg.frames <= LONG_VIDEO), rgb) for m in motions]
        for o in group:
            phrase = str(rng.choice(MOTION_PHRASES[o.motion]))
            self.expressions.append(SynExpression(f"the {color} {shape} {phrase}", "motion", o.oid,
                                                  [p.oid for p in group if p is not o]))

    def spatial_group(self) -> None:
        rng, cfg = self.rng, self.cfg
        color, shape = self.fresh_look()
        size, texture = str(rng.choice(list(SIZES))), str(rng.choice(TEXTURES))
        r0 = self.radius(size)
        horizontal = rng.random() < 0.6
        motion = "still"
        if cfg.frames <= LONG_VIDEO and rng.random() < 0.5:
            motion = str(rng.choice(["up", "down"] if horizontal else ["left", "right"]))  # across the relation's axis
        rgb = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLORS[color])
        speed = rng.uniform(1.6, 2.8) * min(cfg.width, cfg.height) / 120
        a = _trajectory(motion, cfg, r0, rng, speed=speed)
        sep = rng.uniform(2.6, 4.0) * r0
        if horizontal:
            start = (a[0][0] + sep * rng.choice([-1, 1]), a[1][0])
        else:
            start = (a[0][0], a[1][0] + sep * rng.choice([-1, 1]))
        b = _trajectory(motion, cfg, r0, rng, speed=speed, start=start)
        for x, y in ((b[0], b[1]),):
            if (x - r0 < 0).any() or (x + r0 > cfg.width).any() or (y - r0 < 0).any() or (y + r0 > cfg.height).any():
                raise _Reject
        oa = self.new_object(color, shape, size, texture, motion, a, rgb)
        ob = self.new_object(color, shape, size, texture, motion, b, rgb)
        first, second = (oa, ob) if (oa.x[0] < ob.x[0] if horizontal else oa.y[0] < ob.y[0]) else (ob, oa)
        words = ("left", "right") if horizontal else ("top", "bottom")
        for o, word, other in ((first, words[0], second), (second, words[1], first)):
            phrase = str(rng.choice(SPATIAL_PHRASES[word]))
            self.expressions.append(SynExpression(f"the {color} {shape} {phrase}", "spatial", o.oid, [other.oid]))

    def appearance_group(self) -> None:
        rng, cfg = self.rng, self.cfg
        allowed = [m for m in MOTIONS if cfg.frames <= LONG_VIDEO or m not in ("grow", "shrink")]
        if rng.random() < 0.4:  # a size pair: same colour and shape, the size word tells them apart
            color, shape = self.fresh_look()
            texture = str(rng.choice(TEXTURES))
            pair = []
            for size in ("small", "big"):
                m = str(rng.choice(["still", "bounce"] + list(LINEAR)))
                pair.append(self.new_object(color, shape, size, texture, m, _trajectory(m, cfg, self.radius(size), rng)))
            for o, other in ((pair[0], pair[1]), (pair[1], pair[0])):
                self.expressions.append(SynExpression(f"the {o.size} {color} {shape}", "appearance", o.oid, [other.oid]))
            return
        if not self.objects:
            raise _Reject
        anchor = self.objects[int(rng.integers(len(self.objects)))]
        color, shape = self.fresh_look(share_with=anchor)
        size, texture = str(rng.choice(list(SIZES))), str(rng.choice(TEXTURES))
        m = str(rng.choice(allowed))
        o = self.new_object(color, shape, size, texture, m, _trajectory(m, cfg, self.radius(size), rng))
        words = f"the {size} {color} {shape}" if rng.random() < 0.3 else f"the {color} {shape}"
        self.expressions.append(SynExpression(words, "appearance", o.oid, []))

    def absent_object(self) -> None:
        """An object that is out of the frame for part of the video (enters, leaves, or both)."""
        rng, cfg = self.rng, self.cfg
        if not self.objects:
            raise _Reject
        anchor = self.objects[int(rng.integers(len(self.objects)))]
        color, shape = self.fresh_look(share_with=anchor)
        size, texture = str(rng.choice(list(SIZES))), str(rng.choice(TEXTURES))
        m = str(rng.choice(LINEAR))
        speed = rng.uniform(4.5, 7.5) * min(cfg.width, cfg.height) / 120
        o = self.new_object(color, shape, size, texture, m, _trajectory(m, cfg, self.radius(size), rng, in_frame=False, speed=speed))
        self.expressions.append(SynExpression(f"the {color} {shape}", "absent", o.oid, []))


def _visible_area(labels: np.ndarray, oid: int) -> np.ndarray:
    return (labels == oid).reshape(labels.shape[0], -1).sum(1)


def _finish(layout: _Layout, labels: np.ndarray, cfg: SyntheticConfig) -> list[SynExpression]:
    """Distractors, absence counts and the constraints the rendered video must meet."""
    objs = {o.oid: o for o in layout.objects}
    area = {oid: _visible_area(labels, oid) for oid in objs}
    min_px = max(6, int(0.002 * cfg.width * cfg.height))
    out = []
    for e in layout.expressions:
        t = objs[e.target]
        if e.type in ("appearance", "absent"):
            extra = [o.oid for o in layout.objects if o.oid != t.oid and (o.color == t.color or o.shape == t.shape)]
            e.distractors = sorted(set(e.distractors) | set(extra))
        if not e.distractors:
            raise _Reject
        present = area[t.oid] >= min_px
        e.absent_frames = int((area[t.oid] == 0).sum())
        if e.type == "absent":
            # absent somewhere, present long enough to be found, and no sliver frames to argue about
            if not (2 <= e.absent_frames <= cfg.frames - 4) or ((area[t.oid] > 0) & ~present).sum() > 2:
                raise _Reject
        elif present.mean() < 0.75:
            raise _Reject
        if e.type in ("spatial", "motion"):
            for d in e.distractors:  # the twins must be visible together most of the time
                if ((area[d] >= min_px) & present).mean() < 0.6:
                    raise _Reject
        out.append(e)
    return out


def generate_video(seed: int, index: int, cfg: SyntheticConfig = SyntheticConfig()) -> SynVideo:
    """Video ``index`` of the split with ``seed``: depends on (seed, index) only."""
    rng = np.random.default_rng([int(seed), int(index)])
    for _ in range(cfg.max_tries):
        layout = _Layout(cfg, rng)
        try:
            layout.motion_group()
            if rng.random() < 0.7:
                layout.spatial_group()
            layout.appearance_group()
            if rng.random() < 0.5:
                layout.absent_object()
            frames, labels = render(layout.objects, cfg, rng)
            expressions = _finish(layout, labels, cfg)
        except _Reject:
            continue
        return SynVideo(f"syn{seed}_{index:05d}", frames, labels, layout.objects, expressions)
    raise RuntimeError(f"no valid layout for video {index} of seed {seed} in {cfg.max_tries} tries "
                       f"(frame size {cfg.width}x{cfg.height} may be too small)")


# ----- writing a split ------------------------------------------------------------------
def _palette() -> list[int]:
    """The DAVIS palette (object k -> a distinct colour), 256 entries."""
    pal = []
    for k in range(256):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def _write_png(path: Path, rgb: np.ndarray, jpeg: bool) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok = cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise OSError(f"cannot write {path}")


def _write_video(out: Path, seed: int, index: int, cfg: SyntheticConfig, jpeg: bool) -> SynVideo:
    """Generate video ``index`` of ``seed`` and write its frames and label maps under ``out``."""
    from PIL import Image

    video = generate_video(seed, index, cfg)
    palette = _palette()
    img_dir, ann_dir = out / "JPEGImages" / video.name, out / "Annotations" / video.name
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    for i, (frame, lab) in enumerate(zip(video.frames, video.labels)):
        _write_png(img_dir / f"{i:05d}{'.jpg' if jpeg else '.png'}", frame, jpeg)
        im = Image.fromarray(lab, mode="P")
        im.putpalette(palette)
        im.save(ann_dir / f"{i:05d}.png", optimize=False)
    return video


def _write_video_star(job: tuple) -> SynVideo:
    return _write_video(*job)


def write_split(out: str | Path, *, seed: int, videos: int, cfg: SyntheticConfig = SyntheticConfig(),
                jpeg: bool = False, overwrite: bool = False, progress=None, workers: int = 1) -> dict:
    """Generate ``videos`` videos with ``seed`` into ``out`` (Ref-YouTube-VOS layout); returns the
    split's statistics (also stored in meta.json under "generator"). ``workers`` > 1 renders in
    that many processes; video i of a seed depends on (seed, i) alone, so the bytes are the same."""
    if videos < 1:
        raise ValueError("--videos must be at least 1")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    out = Path(out)
    if (out / "meta_expressions.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a split (meta_expressions.json); pass --overwrite to replace it")
    meta_exp: dict = {"videos": {}}
    meta: dict = {"videos": {}}
    stats = SplitStats()
    names = [f"{i:05d}" for i in range(cfg.frames)]
    jobs = [(out, seed, i, cfg, jpeg) for i in range(videos)]
    pool = None
    if workers > 1 and videos > 1:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(min(workers, videos))
        rendered = pool.imap(_write_video_star, jobs, chunksize=4)  # in order: the meta files list videos by index
    else:
        rendered = map(_write_video_star, jobs)
    try:
        for video in rendered:
            _add_to_meta(video, names, meta_exp, meta)
            stats.add(video)
            if progress is not None:
                progress(1)
    finally:
        if pool is not None:
            pool.terminate()
    summary = stats.as_dict()
    summary.update({"seed": seed, "videos": videos, "frames": cfg.frames, "width": cfg.width, "height": cfg.height,
                    "frame_format": "jpeg" if jpeg else "png"})
    meta["generator"] = summary
    (out / "meta_expressions.json").write_text(json.dumps(meta_exp, indent=1))
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return summary


def _add_to_meta(video: SynVideo, names: list[str], meta_exp: dict, meta: dict) -> None:
    meta_exp["videos"][video.name] = {
        "expressions": {str(k): {"exp": e.text, "obj_id": str(e.target)} for k, e in enumerate(video.expressions)},
        "frames": names,
    }
    meta["videos"][video.name] = {
        "objects": {
            str(o.oid): {
                "category": o.category, "color": o.color, "shape": o.shape, "size": o.size, "texture": o.texture,
                "motion": o.motion, "frames": [names[i] for i in np.flatnonzero(_visible_area(video.labels, o.oid))],
            }
            for o in video.objects
        },
        "expressions": {str(k): {"type": e.type, "target": e.target, "distractors": e.distractors,
                                 "absent_frames": e.absent_frames} for k, e in enumerate(video.expressions)},
    }


@dataclass
class SplitStats:
    """Counts over a split: expression types, distractors, absent and occluded frames."""

    videos: int = 0
    frames: int = 0
    objects: int = 0
    by_type: dict = field(default_factory=lambda: {t: 0 for t in EXPRESSION_TYPES})
    distractors: list = field(default_factory=list)
    absent_frames: int = 0
    target_frames: int = 0
    occluded_frames: int = 0
    cut_frames: int = 0
    motions: dict = field(default_factory=dict)

    def add(self, video: SynVideo) -> None:
        t, h, w = video.labels.shape
        self.videos += 1
        self.frames += t
        self.objects += len(video.objects)
        objs = {o.oid: o for o in video.objects}
        for e in video.expressions:
            self.by_type[e.type] += 1
            self.distractors.append(len(e.distractors))
            self.absent_frames += e.absent_frames
            self.target_frames += t
            o = objs[e.target]
            vis = _visible_area(video.labels, o.oid)
            inside = (o.x - o.r >= 0) & (o.x + o.r <= w) & (o.y - o.r >= 0) & (o.y + o.r <= h)
            self.cut_frames += int(((vis > 0) & ~inside).sum())
            for i in np.flatnonzero((vis > 0) & inside):
                if vis[i] < 0.9 * _shape_mask(o.shape, o.x[i], o.y[i], o.r[i], (h, w)).sum():
                    self.occluded_frames += 1
            if e.type == "motion":
                self.motions[o.motion] = self.motions.get(o.motion, 0) + 1

    def as_dict(self) -> dict:
        d = np.array(self.distractors or [0])
        n = max(1, sum(self.by_type.values()))
        return {
            "expressions": int(sum(self.by_type.values())),
            "by_type": dict(self.by_type),
            "objects_per_video": round(self.objects / max(1, self.videos), 2),
            "distractors_per_expression": {"mean": round(float(d.mean()), 2), "min": int(d.min()), "max": int(d.max())},
            "absent_target_frames": self.absent_frames,
            "absent_target_frame_fraction": round(self.absent_frames / max(1, self.target_frames), 4),
            "occluded_target_frames": self.occluded_frames,
            "target_frames_cut_by_border": self.cut_frames,
            "motion_targets": dict(sorted(self.motions.items())),
            "expressions_per_video": round(n / max(1, self.videos), 2),
        }
