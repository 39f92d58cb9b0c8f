"""``BioLinear`` and ``BioConv2d``: nn.Linear / nn.Conv2d trained with a rule.

They subclass the torch layers, so ``isinstance`` checks, ``weight``/``bias``
state_dict keys and pretrained weights stay. A layer's feedback lives in:

* the persistent buffer ``feedback`` (fa: B; frsf: |M|; dfa: the (in,
  output_dim) projection) -- in ``state_dict()``, never in ``parameters()``;
* ``_extra_state`` in the state_dict: mode, init, seed and the number of
  draws made so far (brsf), so a checkpoint resumes the same B
  sequence and loading a checkpoint of another mode fails loudly.

usf and brsf compute B in backward from W (and, brsf, a per-draw seed) and
hold no matrix. Forward passes that need no gradient (eval, ``torch.no_grad``)
take the plain torch path.

Recomputation and replicas:

* ``torch.utils.checkpoint(..., use_reentrant=False)`` runs a forward again
  inside backward and keeps the original autograd nodes: brsf draws in
  backward (``Feedback.drawn``), so the recomputed forward changes nothing,
  and a dfa layer recomputed outside the model's forward gets an unused slot
  (the original node's slot, already filled, is the one read). With
  ``use_reentrant=True`` the recomputed node is the one backpropagated: brsf
  draws there once, dfa refuses with a ConfigError (its output error belongs
  to a forward that already ended).
* ``nn.DataParallel`` replicas are shallow copies made every forward: each
  replica counts its own brsf draws from the original's count, so all
  replicas of a step use the same B (as one device would), and hands the
  count back to the original layer (``_replicate_for_data_parallel``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biohash.bio.functions import BioConv2dFunction, BioLinearFunction
from biohash.bio.rules import (INITS, MODES, ErrorSlot, Feedback, Rule, weight_chunks, fans,
                               feedback_std, step_seed)
from biohash.errors import ConfigError

__all__ = ["BioLayer", "BioLinear", "BioConv2d"]


def _in_backward() -> bool:
    """True while autograd runs a backward pass on this thread.

    A training forward of a bio layer happens there only as checkpoint
    recomputation. ``torch.utils.checkpoint`` itself asks the engine the
    same way (``_current_graph_task_id``; -1 outside backward).
    """
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


class BioLayer:
    """Mixin holding a layer's rule state; ``BioLinear``/``BioConv2d`` use it.

    ``_setup_bio`` also turns an existing nn.Linear/nn.Conv2d into a bio
    layer in place (``convert`` swaps the class, as torch's parametrize
    does), so the weight Parameter object -- and any optimizer holding it --
    is kept.
    """

    mode: str
    init: str
    feedback_seed: int
    feedback_std: float
    weight: nn.Parameter
    bias: nn.Parameter | None

    def _setup_bio(self, mode: str, *, seed: int, init: str, output_dim: int | None = None,
                   tap: Any = None) -> None:
        rule: Rule = MODES.get(mode)
        INITS.check(init)
        if rule.direct and (output_dim is None or tap is None):
            raise ConfigError("dfa layers need the model output: create them with "
                              "convert(model, 'dfa') instead of constructing them")
        self.mode, self.init, self.feedback_seed = mode, init, int(seed)
        self._rule = rule
        self._draws = 0  # backward passes that drew a B (brsf)
        self._exact = rule.name == "bp"  # gradient_alignment flips this temporarily
        self._dfa_tap = tap
        self.feedback_std = feedback_std(init, *fans(self.weight.shape))
        gen = torch.Generator().manual_seed(self.feedback_seed)
        buf = rule.draw_buffer(self.weight, self._in_size(), init, gen, output_dim)
        if buf is not None:
            w = self.weight
            self.register_buffer("feedback", buf.to(device=w.device, dtype=w.dtype))

    def _in_size(self) -> int:
        raise NotImplementedError

    def _wants_bio(self, x: Tensor) -> bool:
        if self._exact or not torch.is_grad_enabled():
            return False
        return x.requires_grad or self.weight.requires_grad or (
            self.bias is not None and self.bias.requires_grad)

    def _feedback(self) -> Feedback:
        rule = self._rule
        slot = None
        if rule.direct:
            slot = self._dfa_tap.current
            if slot is None and _in_backward():
                slot = ErrorSlot()  # checkpoint recomputation: see the module docstring
            elif slot is None:
                raise ConfigError(
                    "a dfa layer was called for training outside the forward of the model "
                    "passed to convert(); dfa needs that model's output error")
        draw = self._next_seed if rule.per_step else None
        return Feedback(rule, self._buffers.get("feedback"), self.feedback_std, 0, slot, draw)

    def _next_seed(self) -> int:
        """Count one brsf draw (called in backward) and return its seed."""
        self._draws += 1
        origin = self.__dict__.get("_replica_of")
        if origin is not None:  # every replica of a step reaches the same count
            origin._draws = max(origin._draws, self._draws)
        return step_seed(self.feedback_seed, self._draws)

    def _replicate_for_data_parallel(self) -> nn.Module:
        replica = super()._replicate_for_data_parallel()  # type: ignore[misc]
        # object.__setattr__: a Module attribute would register a submodule
        object.__setattr__(replica, "_replica_of", self)
        return replica

    @torch.no_grad()
    def feedback_matrix(self) -> Tensor:
        """The B of the latest draw (brsf: the latest backward) / of now (others), full size.

        Weight-shaped for bp/fa/usf/frsf/brsf; (in, output_dim) for dfa.
        """
        fb = Feedback(self._rule, self._buffers.get("feedback"), self.feedback_std,
                      step_seed(self.feedback_seed, self._draws))
        if self._rule.direct:
            return fb.buffer.clone()
        chunks = weight_chunks(self.weight.shape, self.weight.device)
        if len(chunks) == 1:
            return fb.matrix(self.weight).clone()
        b = torch.empty_like(self.weight)
        for part in chunks:
            b[part] = fb.matrix(self.weight, part)
        return b

    def get_extra_state(self) -> dict[str, Any]:
        return {"mode": self.mode, "init": self.init, "seed": self.feedback_seed,
                "draws": self._draws}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("mode") != self.mode:
            raise ConfigError(f"checkpoint layer was trained with mode {state.get('mode')!r}, "
                              f"this layer uses {self.mode!r}; convert with the same mode")
        self.feedback_seed = int(state["seed"])
        self._draws = int(state["draws"])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode}, init={self.init}"  # type: ignore[misc]


class BioLinear(BioLayer, nn.Linear):
    """nn.Linear whose gradient to the input follows ``mode``; input (..., in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 mode: str = "fa", seed: int = 0, init: str = "xavier",
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias, device=device, dtype=dtype)
        self._setup_bio(mode, seed=seed, init=init)

    def _in_size(self) -> int:
        return self.in_features

    def forward(self, x: Tensor) -> Tensor:
        if not self._wants_bio(x):
            return F.linear(x, self.weight, self.bias)
        return BioLinearFunction.apply(x, self.weight, self.bias, self._feedback())


class BioConv2d(BioLayer, nn.Conv2d):
    """nn.Conv2d whose gradient to the input follows ``mode``; input (N, C, H, W) or (C, H, W).

    Every Conv2d option works: string padding ('same' with an asymmetric
    split and non-zeros padding modes pad explicitly with F.pad, exactly as
    nn.Conv2d does, then convolve with padding 0), stride, dilation, groups,
    channels_last inputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, mode: str = "fa", seed: int = 0,
                 init: str = "xavier", device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode, device=device, dtype=dtype)
        self._setup_bio(mode, seed=seed, init=init)

    def _in_size(self) -> int:
        return self.in_channels

    def _explicit_padding(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        """(input, integer padding) equivalent to nn.Conv2d's own handling."""
        if self.padding_mode != "zeros":
            return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0, 0)
        if self.padding == "valid":
            return x, (0, 0)
        if self.padding == "same":
            totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
            if all(t % 2 == 0 for t in totals):
                return x, tuple(t // 2 for t in totals)
            return F.pad(x, self._reversed_padding_repeated_twice), (0, 0)
        return x, tuple(self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if not self._wants_bio(x):
            return nn.Conv2d.forward(self, x)
        if x.dim() == 3:  # unbatched (C, H, W): what F.conv2d does inside, made explicit
            return self.forward(x.unsqueeze(0)).squeeze(0)
        x, padding = self._explicit_padding(x)
        return BioConv2dFunction.apply(x, self.weight, self.bias, self._feedback(), self.stride,
                                       padding, self.dilation, self.groups)
