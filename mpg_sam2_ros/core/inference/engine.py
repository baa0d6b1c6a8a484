"""Streaming engine: one object per camera stream, ``step(frame, stamp) -> StepResult``.

MPG-SAM 2 is offline in the paper (the whole video is the global context). Here a sliding
window of the last W frames is the global context of the Mask Prior Generator and the
aggregator, and SAM 2 decodes every new frame with its bounded memory bank.

Each frame is encoded once by each encoder: SAM 2 once per frame (shared by all commands),
BEiT-3 once per (frame, command). With no look-ahead the MPG is incremental: only the newest
frame's rows of Eq. 2 are computed, attending to the cached rows of the window, and older frames
keep what was computed when they were newest. For the newest frame, V' equals the
full-window self-attention row exactly; V'_cls, the prior and V_g use the cached (causal) V'
rows of the older frames, which a bidirectional recomputation over the window would change.
What the engine computes is the causal model of streaming-consistent training
(``global_context(causal=True)``): over the first W frames of a stream the two are equal
(tested against the training forward); later, each cached row keeps the context of its own
last W frames. Per-frame cost is therefore nearly flat in W.
With look-ahead k > 0 the output is delayed by k frames and the window
(W past + k future frames) is recomputed bidirectionally, as offline: better context for
k frames of latency and a per-frame MPG cost that grows with W.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.mpg_sam2 import MPGSAM2, FramePrompt, GlobalContext, ImageFeatures
from ..modeling.multimodal_encoder import MultimodalFeatures
from ..preprocess import FramePreprocessor, validate_frame
from ..text import TextTokenizer, TokenizedText
from .memory import MemoryBank


# the EngineConfig fields that segment, bench-accuracy and the node pass through as one mapping
POLICY_FIELDS = ("reanchor_after_absent", "reanchor_every", "presence_threshold")


@dataclass(frozen=True)
class EngineConfig:
    """window: W frames of global context; lookahead: k frames of output delay;
    max_objects: concurrent commands.

    Conditioning policy for long streams (SAM 2 keeps its first frame as the conditioning
    frame forever, and its pointer distance grows without bound, DESIGN.md §8): an object's
    SAM 2 memory restarts, making the next frame its new conditioning frame,
    ``reanchor_after_absent`` frames after the object was last present (0: never), and every
    ``reanchor_every`` frames (0: never). Its window (the MPG's context) is kept.

    presence_threshold: an object is present in a frame, and its mask is returned, where its
    presence probability sigmoid(object-score logit) is above this; below it the mask is empty
    and the frame counts as absent (for ``reanchor_after_absent``). None (default): the model's
    own, ``model.config.presence_threshold``, which a calibrated checkpoint carries in its
    metadata and is 0.5 otherwise. 0.5 is SAM 2's own rule (its decoder already empties the
    mask of a logit <= 0); higher trades missed frames for fewer false positives where the
    target is absent (``scripts/probe_presence.py`` measures both and calibrates a checkpoint).
    An output gate only: SAM 2's memory is written as without it.

    batch_objects: decode the objects of a frame as one batch where their histories match
    (default), or one at a time."""

    window: int = 8
    lookahead: int = 0
    max_objects: int = 8
    reanchor_after_absent: int = 0
    reanchor_every: int = 0
    presence_threshold: float | None = None
    batch_objects: bool = True

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if self.lookahead < 0:
            raise ValueError("lookahead must be >= 0")
        if self.window + self.lookahead > 64:
            raise ValueError("window + lookahead must be <= 64")
        if self.max_objects < 1:
            raise ValueError("max_objects must be >= 1")
        if self.reanchor_after_absent < 0 or self.reanchor_every < 0:
            raise ValueError("reanchor_after_absent and reanchor_every must be >= 0 (0: off)")
        check_presence_threshold(self.presence_threshold)


def check_presence_threshold(threshold: float | None) -> None:
    """ValueError unless ``threshold`` is None (the model's own) or in [0.5, 1)."""
    if threshold is not None and not 0.5 <= threshold < 1.0:
        raise ValueError(f"presence_threshold must be in [0.5, 1) or None (the model's), got {threshold}")


def resolve_presence_threshold(threshold: float | None, model: MPGSAM2) -> float:
    """The presence threshold in force: ``threshold``, or the model's own when None."""
    return float(model.config.presence_threshold if threshold is None else threshold)


def presence_logit(threshold: float) -> float:
    """sigmoid(x) > t <=> x > logit(t): the object-score logit a mask must exceed (0.0 at 0.5)."""
    return math.log(threshold / (1.0 - threshold))


@dataclass
class ObjectResult:
    """mask: bool [H, W] at the input size; score: object presence probability."""

    object_id: int
    text: str
    mask: np.ndarray
    score: float

    @property
    def present(self) -> bool:
        return self.score > 0.5 and bool(self.mask.any())


@dataclass
class StepResult:
    """The result for frame ``frame_index`` (with look-ahead, an earlier frame than the one
    just given). ``stream_reset``: first output after a reset."""

    frame_index: int
    stamp: float | None
    objects: list[ObjectResult]
    stream_reset: bool
    latency_s: float


@dataclass
class _FrameCache:
    """One window frame of one object: BEiT-3 outputs and the MPG rows computed for it."""

    patches: torch.Tensor          # [N, D] raw BEiT-3 patches (keys/values of Eq. 2)
    cls: torch.Tensor              # [D]
    text: torch.Tensor             # [L, D]
    text_padding: torch.Tensor     # [L]
    contextual: torch.Tensor | None = None    # [N, D] V' row
    global_feature: torch.Tensor | None = None  # [N, C] V_g row without temporal encoding
    prior: torch.Tensor | None = None         # [1, g, g]
    sparse: torch.Tensor | None = None        # [1, C] projected [CLS] sparse prompt
    text_proj: torch.Tensor | None = None     # [L, C] projected text tokens (V_u half)
    motion: torch.Tensor | None = None        # [N, K] raw motion cues (the MPG's motion readout)


@dataclass
class _ObjectState:
    object_id: int
    tokens: TokenizedText
    window: deque = field(default_factory=deque)
    memory: MemoryBank | None = None
    first_frame: int | None = None  # stream index of its conditioning frame
    absent_run: int = 0             # frames since the object was last present


@dataclass
class _Pending:
    index: int
    stamp: float | None
    size: tuple[int, int]
    features: ImageFeatures
    started: float


class StreamingEngine:
    """Arguments: a built model (eval mode), its tokenizer, an ``EngineConfig``."""

    def __init__(self, model: MPGSAM2, tokenizer: TextTokenizer, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config or EngineConfig()
        self.presence_threshold = resolve_presence_threshold(self.config.presence_threshold, model)
        self._presence_logit = presence_logit(self.presence_threshold)
        self.preprocess = FramePreprocessor.for_model(model)
        self._objects: dict[int, _ObjectState] = {}
        self._command_batch: tuple[torch.Tensor, torch.Tensor] | None = None  # padded ids, padding
        self._next_id = 0
        self.reset()

    # ----- commands ------------------------------------------------------------------
    def add_command(self, text: str) -> int:
        """Start segmenting ``text``; returns its object id. ``TextError`` for bad text."""
        if len(self._objects) >= self.config.max_objects:
            raise ValueError(f"at most {self.config.max_objects} commands at once")
        tokens = self.tokenizer.encode(text)
        oid = self._next_id
        self._next_id += 1
        self._objects[oid] = self._fresh_state(oid, tokens)
        self._command_batch = None
        return oid

    def set_command(self, object_id: int, text: str) -> None:
        """Replace an object's command: its window and memory start over."""
        if object_id not in self._objects:
            raise KeyError(f"no object {object_id}")
        self._objects[object_id] = self._fresh_state(object_id, self.tokenizer.encode(text))
        self._command_batch = None

    def remove_command(self, object_id: int) -> None:
        self._objects.pop(object_id, None)
        self._command_batch = None

    def clear_commands(self) -> None:
        self._objects.clear()
        self._command_batch = None

    @property
    def commands(self) -> dict[int, str]:
        return {oid: s.tokens.text for oid, s in self._objects.items()}

    def _fresh_state(self, oid: int, tokens: TokenizedText) -> _ObjectState:
        sam = self.model.sam2
        return _ObjectState(
            object_id=oid,
            tokens=tokens,
            window=deque(maxlen=self.config.window + self.config.lookahead),
            memory=MemoryBank(num_maskmem=sam.num_maskmem, max_obj_ptrs=sam.max_obj_ptrs_in_encoder),
        )

    # ----- stream --------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the stream (frames, windows, memories); keep the commands."""
        self._frame_index = 0
        self._last_stamp: float | None = None
        self._size: tuple[int, int] | None = None
        self._pending: deque[_Pending] = deque()
        self._reset_flag = True
        # the last frames' BEiT-3 inputs: the previous one (mpg.motion_stem), block_flow back
        # (mpg.block_flow), block_scale back (mpg.block_scale)
        mpg = self.model.mask_prior
        self._recent_mm: deque[torch.Tensor] = deque(maxlen=max(1, mpg.block_flow, mpg.block_scale))
        for oid, state in list(self._objects.items()):
            self._objects[oid] = self._fresh_state(oid, state.tokens)

    @torch.inference_mode()
    def step(self, frame: np.ndarray, stamp: float | None = None) -> StepResult | None:
        """Process one RGB uint8 frame. Returns the result of the frame ``lookahead`` frames
        back (None while the look-ahead fills). A resolution change or a timestamp going
        backwards resets the stream first. ``FrameError`` for unusable frames."""
        started = time.perf_counter()
        frame = validate_frame(frame)
        size = frame.shape[:2]
        if self._size is not None and (size != self._size or (stamp is not None and self._last_stamp is not None and stamp < self._last_stamp)):
            self.reset()
        self._size, self._last_stamp = size, stamp
        inputs = self.preprocess(frame)
        model = self.model
        features = model.encode_image(inputs.sam)
        index = self._frame_index
        self._frame_index += 1
        self._encode_commands(inputs.mm, features)
        self._recent_mm.append(inputs.mm)
        self._pending.append(_Pending(index, stamp, size, features, started))
        if len(self._pending) <= self.config.lookahead:
            return None
        return self._decode(self._pending.popleft())

    def flush(self) -> list[StepResult]:
        """End of stream: decode the frames still held back by the look-ahead."""
        out = []
        with torch.inference_mode():
            while self._pending:
                out.append(self._decode(self._pending.popleft(), flushing=True))
        return out

    def _encode_commands(self, mm_image: torch.Tensor, features: ImageFeatures) -> None:
        """BEiT-3 on the new frame for every command at once, cached in the windows
        (``features``: the frame's SAM 2 features, for the MPG's SAM 2 stem)."""
        if not self._objects:
            return
        states = list(self._objects.values())
        model = self.model
        if self._command_batch is None:  # tokenised once per command change, not per frame
            ids, padding = self.tokenizer.pad([s.tokens for s in states])
            self._command_batch = (ids.to(model.device), padding.to(model.device))
        ids, padding = self._command_batch
        previous = self._recent_mm[-1] if self._recent_mm else mm_image  # a stream's first frame: none
        n = len(states)
        flow = {}
        if model.mask_prior.block_flow:  # the frame block_flow back, never beyond the window; none at a stream's start
            gap = min(len(self._recent_mm), model.mask_prior.block_flow, self.config.window - 1)
            reference = self._recent_mm[-gap] if gap else mm_image
            flow = {"reference": reference.expand(n, -1, -1, -1), "gaps": torch.tensor([gap], device=mm_image.device)}
        if model.mask_prior.block_scale:  # the same for the block scale
            gap = min(len(self._recent_mm), model.mask_prior.block_scale, self.config.window - 1)
            reference = self._recent_mm[-gap] if gap else mm_image
            flow |= {"scale_reference": reference.expand(n, -1, -1, -1), "scale_gaps": torch.tensor([gap], device=mm_image.device)}
        mm = model.encode_multimodal(mm_image.expand(n, -1, -1, -1), ids, padding, previous=previous.expand(n, -1, -1, -1),
                                     image_features=features, **flow)
        incremental = self.config.lookahead == 0
        sparse = model.sparse_prompt(mm.cls) if incremental and model.sparse_prompt is not None else None
        text_proj = None
        if incremental and model.aggregator is not None and model.aggregator.pixel_global:
            text_proj = model.aggregator.text_proj(mm.text)
        for k, state in enumerate(states):
            length = state.tokens.length
            item = _FrameCache(mm.patches[k], mm.cls[k], mm.text[k, :length], mm.text_padding[k, :length],
                               motion=None if mm.motion is None else mm.motion[k])
            if incremental:
                item.sparse = None if sparse is None else sparse[k : k + 1]
                item.text_proj = None if text_proj is None else text_proj[k, :length]
                self._incremental_mpg(state, item)
            state.window.append(item)

    def _incremental_mpg(self, state: _ObjectState, item: _FrameCache) -> None:
        """Eqs. 2-3 for the newest frame only, against the cached window rows."""
        mpg = self.model.mask_prior
        past = list(state.window)[-(self.config.window - 1):] if self.config.window > 1 else []
        context = torch.stack([c.patches for c in past] + [item.patches])[None]
        new = item.patches[None, None]
        contextual = mpg.contextualise(new, context)
        window_rows = torch.stack([c.contextual for c in past] + [contextual[0, 0]])[None]
        cls_ctx = mpg.class_tokens(item.cls[None, None], window_rows)
        prior, global_feature = mpg.project(new, contextual, cls_ctx, None if item.motion is None else item.motion[None, None])
        item.contextual = contextual[0, 0]
        item.global_feature = global_feature[0, 0]
        item.prior = None if prior is None else prior[0, 0]

    def _context(self, state: _ObjectState, upto: int) -> tuple[GlobalContext, int]:
        """GlobalContext over the object's window frames (ending at window position ``upto``
        inclusive, or the whole window with look-ahead), and the decoded frame's position."""
        model = self.model
        items = list(state.window)
        if self.config.lookahead == 0:
            items = items[-self.config.window:]
            mpg = model.mask_prior
            positions = torch.arange(len(items), device=model.device)
            v_g = torch.stack([c.global_feature for c in items])[None] + mpg.temporal_encoding(positions)[None, :, None]
            prior = None
            if model.config.mpg.enabled and items[-1].prior is not None:
                prior = torch.stack([c.prior for c in items])[None]
            ctx = self._text_context(items, v_g, prior)
            return ctx, len(items) - 1
        mm = MultimodalFeatures(
            cls=torch.stack([c.cls for c in items]),
            patches=torch.stack([c.patches for c in items]),
            text=torch.stack([c.text for c in items]),
            text_padding=torch.stack([c.text_padding for c in items]),
            motion=None if items[-1].motion is None else torch.stack([c.motion for c in items]),
        )
        return model.global_context(mm, batch=1), upto

    @staticmethod
    def _text_context(items, v_g, prior) -> GlobalContext:
        """GlobalContext from the window's cached per-frame projections (computed once per frame)."""
        sparse = None if items[-1].sparse is None else torch.stack([c.sparse for c in items])[None]
        text = None if items[-1].text_proj is None else torch.stack([c.text_proj for c in items])[None]
        padding = torch.stack([c.text_padding for c in items])[None]
        return GlobalContext(prior=prior, global_feature=v_g, sparse=sparse, text=text, text_padding=padding)

    def _decode(self, pending: _Pending, flushing: bool = False) -> StepResult:
        """Decode one frame for every object. Objects whose SAM 2 memories hold the same frames
        and whose windows have the same length are decoded as one batch (their memories and
        contexts stacked, text padded to the longest expression and masked), as SAM 2's video
        predictor batches its objects; the others (e.g. a command added later) in smaller batches.
        ``EngineConfig.batch_objects=False`` decodes one object at a time (same results)."""
        model = self.model
        jobs = []
        for state in self._objects.values():
            # window position of the decoded frame: it lags the newest by the frames still pending
            upto = len(state.window) - 1 - len(self._pending)
            if upto < 0:  # command added after this frame arrived
                continue
            self._apply_conditioning_policy(state, pending.index)
            if state.first_frame is None:
                state.first_frame = pending.index
            ctx, t = self._context(state, upto)
            local = pending.index - state.first_frame
            jobs.append((state, ctx, t, local))
        groups: dict[tuple, list] = {}
        for job in jobs:
            state, ctx, t, local = job
            key = (local, t, ctx.global_feature.shape[1], state.memory.signature()) if self.config.batch_objects else (id(state),)
            groups.setdefault(key, []).append(job)
        by_object: dict[int, ObjectResult] = {}
        for group in groups.values():
            states = [g[0] for g in group]
            ctx, t, local = _stack_contexts([g[1] for g in group]), group[0][2], group[0][3]
            memory = states[0].memory if len(states) == 1 else MemoryBank.stacked([s.memory for s in states])
            features = pending.features if len(states) == 1 else pending.features.expand(len(states))
            out = model.track_step(frame_idx=local, is_init_cond_frame=(local == 0), features=features,
                                   prompt=model.frame_prompt(ctx, t), memory=memory)
            logits = F.interpolate(out.mask_logits, size=pending.size, mode="bilinear", align_corners=False)
            masks = (logits[:, 0] > model.config.mask_threshold).cpu().numpy()  # one copy to the host
            scores = out.object_score_logits[:, 0].float().cpu()
            for i, state in enumerate(states):
                state.memory.add(out.memory if len(states) == 1 else out.memory.select(i), is_cond=(local == 0))
                present = bool(scores[i] > self._presence_logit)
                state.absent_run = 0 if present else state.absent_run + 1
                by_object[state.object_id] = ObjectResult(
                    object_id=state.object_id, text=state.tokens.text, mask=masks[i] if present else np.zeros_like(masks[i]),
                    score=float(torch.sigmoid(scores[i])),
                )
        results = [by_object[j[0].object_id] for j in jobs]
        reset, self._reset_flag = self._reset_flag, False
        return StepResult(
            frame_index=pending.index,
            stamp=pending.stamp,
            objects=results,
            stream_reset=reset,
            latency_s=time.perf_counter() - pending.started,
        )

    def _apply_conditioning_policy(self, state: _ObjectState, index: int) -> None:
        """Restart the object's SAM 2 memory (next frame = new conditioning frame) when the
        ``EngineConfig`` policy says so."""
        cfg = self.config
        if state.first_frame is None:
            return
        absent = cfg.reanchor_after_absent > 0 and state.absent_run >= cfg.reanchor_after_absent
        periodic = cfg.reanchor_every > 0 and index - state.first_frame >= cfg.reanchor_every
        if absent or periodic:
            state.memory.clear()
            state.first_frame = None
            state.absent_run = 0

    def state_nbytes(self) -> int:
        """Bytes held by stream state (windows, memories, pending frames): bounded by config."""
        total = 0
        for s in self._objects.values():
            total += s.memory.nbytes()
            for c in s.window:
                for t in (c.patches, c.cls, c.text, c.text_padding, c.contextual, c.global_feature, c.prior,
                          c.sparse, c.text_proj, c.motion):
                    if t is not None:
                        total += t.numel() * t.element_size()
        for p in self._pending:
            total += sum(t.numel() * t.element_size() for t in p.features.vision_feats + p.features.vision_pos)
        total += sum(t.numel() * t.element_size() for t in self._recent_mm)
        return total


def _stack_contexts(ctxs: list[GlobalContext]) -> GlobalContext:
    """Objects' contexts (batch 1 each, same window length) as one batch; text tokens padded to
    the longest expression, the padding masked (so the result equals each object's own)."""
    if len(ctxs) == 1:
        return ctxs[0]
    length = max(c.text_padding.shape[-1] for c in ctxs)

    def pad_text(c: GlobalContext) -> tuple[torch.Tensor | None, torch.Tensor]:
        extra = length - c.text_padding.shape[-1]
        padding = F.pad(c.text_padding, (0, extra), value=True)
        text = None if c.text is None else F.pad(c.text, (0, 0, 0, extra))
        return text, padding

    padded = [pad_text(c) for c in ctxs]
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    return GlobalContext(
        prior=cat([c.prior for c in ctxs]), global_feature=torch.cat([c.global_feature for c in ctxs]),
        sparse=cat([c.sparse for c in ctxs]), text=cat([p[0] for p in padded]), text_padding=torch.cat([p[1] for p in padded]),
    )

