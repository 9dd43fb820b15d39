"""One vision-tower pass for a video the reward asks M questions about (``shared_video_encoding``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

log = logging.getLogger(__name__)


def vision_tower(model: PreTrainedModel) -> torch.nn.Module | None:
    """The vision encoder of a Qwen-VL model (``model.model.visual`` in transformers 4.57 and 5)."""
    inner = getattr(model, "model", None)
    return getattr(inner, "visual", None) or getattr(model, "visual", None)


class _NotPerToken(Exception):
    """A vision-tower output that is not one row per video token (so it cannot be repeated)."""


def _repeat_tokens(out: Any, copies: int, lengths: set[int]) -> Any:
    """``out`` (a tensor, or a tuple, list or ModelOutput of them) with every tensor's rows repeated
    ``copies`` times; raises ``_NotPerToken`` for anything whose rows are not one copy's tokens."""
    if out is None:
        return None
    if isinstance(out, torch.Tensor):
        if out.ndim == 0 or out.shape[0] not in lengths:
            raise _NotPerToken(tuple(out.shape))
        return out.repeat(copies, *[1] * (out.ndim - 1))
    if isinstance(out, ModelOutput):
        return type(out)(**{k: _repeat_tokens(v, copies, lengths) for k, v in out.items()})
    if isinstance(out, (tuple, list)):
        items = [_repeat_tokens(v, copies, lengths) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)  # a namedtuple takes fields
    raise _NotPerToken(type(out).__name__)


@contextmanager
def shared_video_encoding(model: PreTrainedModel, copies: int) -> Iterator[None]:
    """Within this context, a video the batch carries ``copies`` times is encoded once.

    The reward asks M questions about one video in one batch, so the vision tower receives M
    identical copies of its patches (the model checks that the video tokens of every sequence
    have their features). Here a pre-hook hands the tower the first copy only and a post-hook
    repeats each per-token output (the merged embeddings, Qwen3-VL's deepstack features, the
    unmerged states where a version returns them) M times: the language model receives what M
    encodings give, for 1/M of the tower's compute and activations, and the pixels' gradient is
    the same sum. Hooks (public ``nn.Module`` API) rather than calling the tower ourselves,
    because what the tower returns differs across the supported transformers versions.

    The caller guarantees the copies are equal (``query_logprobs`` repeats one video). Inputs
    that are not ``copies`` equal grids pass through untouched; an output that is not per token
    (a future version) is recomputed from the whole input, with a warning, so the result is
    always the library's own. Only calls from the thread that entered act, so a Teacher shared
    by threads is safe.
    """
    tower = vision_tower(model)
    if tower is None or copies <= 1:
        yield
        return
    owner = threading.get_ident()
    merge = int(getattr(tower, "spatial_merge_size", 1))
    pending: dict[str, Any] = {}

    def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        if threading.get_ident() != owner:
            return None  # another thread's call, possibly while ours is between the two hooks
        pending.clear()
        grid = kwargs.get("grid_thw")
        if not args or not isinstance(args[0], torch.Tensor) or grid is None:
            return None
        hidden = args[0]
        rows = grid.shape[0] // copies
        if hidden.shape[0] % copies or grid.shape[0] % copies or not torch.equal(grid, grid[:rows].repeat(copies, 1)):
            return None
        if any(isinstance(v, torch.Tensor) for k, v in kwargs.items() if k != "grid_thw"):
            return None  # precomputed per-token inputs (positions, sequence lengths) would need slicing too
        n = hidden.shape[0] // copies
        pending.update(args=args, kwargs=kwargs, lengths={n, n // merge**2})
        return (hidden[:n], *args[1:]), {**kwargs, "grid_thw": grid[:rows]}

    def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        if threading.get_ident() != owner or not pending:
            return None
        whole_args, whole_kwargs, lengths = pending.pop("args"), pending.pop("kwargs"), pending.pop("lengths")
        try:
            return _repeat_tokens(output, copies, lengths)
        except _NotPerToken as exc:
            log.warning("vision tower output %s is not per video token; encoding the %d copies instead", exc, copies)
            return module.forward(*whole_args, **whole_kwargs)

    handles = [tower.register_forward_pre_hook(before, with_kwargs=True),
               tower.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
