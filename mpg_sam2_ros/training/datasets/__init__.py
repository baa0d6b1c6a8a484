"""Referring video (and image) datasets in their published layouts, clip sampling and
clip augmentation. See each module's docstring for the layout it reads."""

from .augment import Augment, Jitter, photometric_jitter, resize_clip, swap_left_right
from .base import DatasetError, ExpressionRecord, ReferringClip, ReferringSplit, VideoRecord
from .mevis import MeViS
from .refcoco import DEFAULT_SPLIT_BY, RefCOCO, load_plain_pickle
from .sampling import ClipDataset, ClipPlan, official_clip_indices, official_clip_plan, stream_clip_indices
from .ytvos import RefDAVIS17, RefYouTubeVOS

__all__ = [
    "Augment", "ClipDataset", "ClipPlan", "DEFAULT_SPLIT_BY", "DatasetError", "ExpressionRecord", "Jitter", "MeViS",
    "RefCOCO", "RefDAVIS17", "RefYouTubeVOS", "ReferringClip", "ReferringSplit", "VideoRecord", "load_plain_pickle",
    "official_clip_indices", "official_clip_plan", "photometric_jitter", "resize_clip", "stream_clip_indices",
    "swap_left_right",
]
