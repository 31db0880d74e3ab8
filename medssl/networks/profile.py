"""Parameter counts and FLOPs of a network, for comparing fusion strategies at equal budget.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the floating-point operations of
matrix multiplications and convolutions (2 per multiply-add) - the operations that dominate these networks;
element-wise operations (activations, normalisation, pooling) are not counted. The same example input must be used
for every model compared, and for joint/late fusion the count depends on which views are present (missing views are
not computed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops", "profile_model"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, each shared ``Parameter`` counted once.

    Args:
        model: the network.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The number of scalar parameters.
    """
    # nn.Module.parameters() already yields a Parameter shared by several submodules once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _sum_outputs(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.float().nan_to_num().sum()
    if isinstance(output, Mapping):
        return sum((_sum_outputs(v) for v in output.values()), torch.zeros(()))
    if isinstance(output, (list, tuple)):
        return sum((_sum_outputs(v) for v in output), torch.zeros(()))
    return torch.zeros(())


def count_flops(model: nn.Module, example_input: Any, *args: Any, include_backward: bool = False, **kwargs: Any) -> int:
    """FLOPs of one call ``model(example_input, *args, **kwargs)`` (forward, optionally plus backward).

    The model keeps its training/eval mode; the call runs without gradients unless ``include_backward``.

    Args:
        model: the network.
        example_input: its first argument (a tensor or a view-keyed dict).
        args: further positional arguments (``presence``).
        include_backward: also count the backward pass of the sum of every output.
        kwargs: keyword arguments of the call.

    Returns:
        The total FLOP count.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        if include_backward:
            _sum_outputs(model(example_input, *args, **kwargs)).backward()
        else:
            with torch.no_grad():
                model(example_input, *args, **kwargs)
    if include_backward:
        model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def profile_model(model: nn.Module, example_input: Any, *args: Any, **kwargs: Any) -> dict[str, int]:
    """Parameters, trainable parameters and forward FLOPs of a model on an example input.

    Args:
        model: the network.
        example_input: its first argument.
        args: further positional arguments.
        kwargs: keyword arguments of the call.

    Returns:
        ``{"parameters": ..., "trainable_parameters": ..., "flops": ...}``.
    """
    return {
        "parameters": count_parameters(model),
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "flops": count_flops(model, example_input, *args, **kwargs),
    }
