"""Per-frame visual-token compressors and DyToK budgets: pure NumPy functions, and the registry of
methods the pipeline runs (``registry.get_method``)."""
from .baselines import random_indices, select_groups, uniform_indices
from .dycoke import kv_keep, ttm, ttm_keep
from .dytok import (allocate_budgets, budget_for_retention, frame_weights, map_group_weights, map_weights_by_time,
                    plan_budgets, select_layers, split_dominant_contextual, uniform_budgets, visual_softmax_head_mean)
from .dyntok import MergedTokens, dyntok_frame, dyntok_groups
from .evs import evs_dissimilarity, evs_groups, evs_keep_count, evs_mask
from .fastv import fastv_keep, fastv_keep_count, fastv_keep_per_frame, fastv_keep_top
from .method import Kept, Method, Request
from .registry import METHODS, REGISTRY, compress_groups, get_method
from .visionzip import pool_merge_units, strided_targets, visionzip, visionzip_groups

__all__ = [
    "allocate_budgets", "budget_for_retention", "frame_weights", "map_group_weights", "map_weights_by_time",
    "plan_budgets", "select_layers", "split_dominant_contextual", "uniform_budgets", "visual_softmax_head_mean",
    "visionzip", "visionzip_groups",
    "strided_targets", "pool_merge_units", "ttm", "ttm_keep", "kv_keep", "dyntok_frame", "dyntok_groups",
    "MergedTokens", "fastv_keep", "fastv_keep_count", "fastv_keep_per_frame", "select_groups",
    "uniform_indices", "random_indices", "evs_dissimilarity", "evs_groups", "evs_keep_count", "evs_mask",
    "fastv_keep_top", "Kept", "Method", "Request", "METHODS", "REGISTRY", "get_method", "compress_groups",
]
