"""``convert``: turn a model's Linear/Conv2d layers into bio layers (Hybrid Bio-Training).

DFA and skip connections -- exactly what happens
-------------------------------------------------
``convert(model, 'dfa')`` registers hooks on ``model``: each forward gets a
fresh error slot, and the output is wrapped in ``CaptureOutputError`` whose
backward records e = dL/d(output) -- so plain ``loss(model(x)).backward()``
works. Every dfa layer then

* computes its weight/bias gradient exactly from the gradient delta arriving
  at its output, and
* sends ``B_l e`` (never ``W^T delta``) to its input, ignoring delta.

Ops that are not converted (activations, BN, pooling, residual adds,
unconverted layers) keep their exact local derivatives. So the gradient
reaching any tensor is the sum, over the paths from it to the output, of the
projections injected by the first dfa layer on each path, passed through the
exact derivatives of the non-converted ops in between. A skip connection
therefore carries the downstream blocks' DFA signals, never a gradient
through a forward weight W. Only a path that meets no converted layer at all
(e.g. ``bp`` scope parts after the dfa part, or a skip straight to the
output) carries the true backprop gradient, because that path has nothing
to replace. ``tests/test_bio.py::test_dfa_residual_skip_carries_only_projections``
checks this.
"""
from __future__ import annotations

import threading
import warnings
from typing import Mapping

from torch import Tensor, nn

from biohash.bio.functions import CaptureOutputError
from biohash.bio.layers import BioConv2d, BioLayer, BioLinear
from biohash.bio.rules import FROZEN, INITS, MODES, ErrorSlot, derive_seed
from biohash.errors import ConfigError

__all__ = ["convert", "is_bio", "Scope"]

Scope = str | Mapping[str, str]
_TAP_ATTR = "_biohash_dfa_tap"


class DFATap:
    """Forward hooks on the converted model: one error slot per forward pass.

    The slot of the forward in progress is per thread: ``nn.DataParallel``
    runs its replicas (which share these hooks) in parallel threads, each
    with its own forward, output and slot.
    """

    def __init__(self, output_dim: int) -> None:
        self.output_dim = output_dim
        self._local = threading.local()

    @property
    def current(self) -> ErrorSlot | None:
        return getattr(self._local, "slot", None)

    @current.setter
    def current(self, slot: ErrorSlot | None) -> None:
        self._local.slot = slot

    def __getstate__(self) -> dict:  # copies and pickles start with no forward in progress
        return {"output_dim": self.output_dim}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["output_dim"])

    def pre(self, module: nn.Module, args: tuple) -> None:
        self.current = ErrorSlot()

    def post(self, module: nn.Module, args: tuple, output: object) -> object:
        slot, self.current = self.current, None
        if not isinstance(output, Tensor):
            raise ConfigError(f"dfa needs the model to return one tensor, got "
                              f"{type(output).__name__}")
        if not output.requires_grad:
            return output
        size = output[0].numel() if output.dim() > 0 and output.shape[0] else self.output_dim
        if size != self.output_dim:
            raise ConfigError(f"dfa: model output has {size} features per sample, the "
                              f"feedback matrices were drawn for output_dim={self.output_dim}; "
                              f"pass convert(..., output_dim={size})")
        return CaptureOutputError.apply(output, slot)


def is_bio(model: nn.Module) -> bool:
    """True if any layer inside ``model`` learns with a rule other than bp."""
    return any(isinstance(m, BioLayer) and m.mode != "bp" for m in model.modules())


def convert(model: nn.Module, mode: str, scope: Scope = "all", *, seed: int = 0,
            init: str = "xavier", output_dim: int | None = None) -> nn.Module:
    """Convert (in place) every nn.Linear/nn.Conv2d inside ``scope`` and return ``model``.

    ``scope``: ``"all"``, a submodule name (dotted allowed), or a mapping
    ``{submodule: mode}`` whose modes are registered modes, ``"bp"`` (left
    as is) or ``"frozen"`` (``requires_grad_(False)``, no conversion); with a
    mapping, ``mode`` is only validated. Forward weights, biases, devices and
    dtypes are kept (the Parameter objects themselves). Each layer draws its
    B from ``derive_seed(seed, qualified_name)``. ``output_dim`` (dfa only)
    defaults to ``out_features`` of the last nn.Linear in ``model``.

    Layers whose class overrides ``forward`` (e.g. timm's Conv2dSame) or that
    are parametrized are left as they are, with a warning.

    A ``"frozen"`` part is also put in eval mode and kept there: its
    ``train()`` leaves it in eval, so ``model.train()`` does not update its
    BatchNorm statistics or turn its Dropout back on (a frozen feature
    extractor computes the same features every epoch).

    Raises ConfigError, before changing anything, for an unknown mode or
    init, a scope naming no submodule, a part that is already converted, a
    part holding no convertible layer, or frozen parts that hold every
    trainable parameter (nothing would learn).
    """
    INITS.check(init)
    if mode != FROZEN:
        MODES.check(mode)
    plan = _plan(model, mode, scope)
    _check_something_learns(model, plan, scope)
    jobs: list[tuple[str, nn.Module, str]] = []
    skipped: list[str] = []
    for name, part, part_mode in plan:
        if part_mode in ("bp", FROZEN):
            continue
        layers, bad = _convertible(part, name)
        done = [n for n, m in part.named_modules(prefix=name) if isinstance(m, BioLayer)]
        if done:
            raise ConfigError(f"scope {name or 'all'!r} is already converted (e.g. {done[0]!r}); "
                              f"convert a fresh model")
        if not layers:
            raise ConfigError(f"scope {name or 'all'!r} holds no nn.Linear/nn.Conv2d to convert"
                              + (f" (skipped: {', '.join(bad)})" if bad else ""))
        jobs += [(q, layer, part_mode) for q, layer in layers]
        skipped += bad
    tap = None
    if any(MODES.get(m).direct for _, _, m in jobs):
        tap = _dfa_tap(model, output_dim)
    # Everything is validated: from here on nothing raises for user input.
    for name, part, part_mode in plan:
        if part_mode == FROZEN:
            _freeze(part)
    for qualname, layer, layer_mode in jobs:
        layer.__class__ = BioLinear if isinstance(layer, nn.Linear) else BioConv2d
        layer._setup_bio(layer_mode, seed=derive_seed(seed, qualname), init=init,
                         output_dim=tap.output_dim if tap else None, tap=tap)
    if skipped:
        warnings.warn(f"convert: left with backprop (custom forward or parametrized): "
                      f"{', '.join(skipped)}", stacklevel=2)
    return model


def _plan(model: nn.Module, mode: str, scope: Scope) -> list[tuple[str, nn.Module, str]]:
    """[(part name, part module, part mode)], all names resolved and checked."""
    if isinstance(scope, str):
        parts = {"": mode} if scope == "all" else {scope: mode}
    elif isinstance(scope, Mapping) and scope:
        parts = dict(scope)
    else:
        raise ConfigError(f"bad scope {scope!r}; allowed: 'all', a submodule name, or a "
                          f"non-empty mapping {{submodule: mode}}")
    allowed = [*MODES.names(), FROZEN]
    plan = []
    for name, part_mode in parts.items():
        if part_mode not in allowed:
            raise ConfigError(f"unknown mode {part_mode!r} for scope {name!r}; "
                              f"choose from {', '.join(allowed)}")
        plan.append((name, _submodule(model, name), part_mode))
    names = sorted(parts)
    for a in names:
        for b in names:
            if a != b and (a == "" or b.startswith(a + ".")):
                raise ConfigError(f"scope parts {a or 'all'!r} and {b!r} overlap; "
                                  f"name disjoint submodules")
    return plan


def _check_something_learns(model: nn.Module, plan: list[tuple[str, nn.Module, str]],
                            scope: Scope) -> None:
    frozen = {id(p) for _, part, m in plan if m == FROZEN for p in part.parameters()}
    if frozen and all(id(p) in frozen for p in model.parameters() if p.requires_grad):
        shown = (",".join(f"{k or 'all'}={v}" for k, v in scope.items())
                 if isinstance(scope, Mapping) else f"{scope}={FROZEN}")
        raise ConfigError(f"scope {shown} freezes every trainable parameter, so nothing "
                          f"would learn; give at least one part a rule or bp")


class _StayInEval:
    """A frozen part's ``train``: whatever mode is asked, the part goes to eval.

    An instance attribute (not a class swap) so the part keeps its class,
    and ``copy.deepcopy``/pickling keep the behaviour.
    """

    def __init__(self, part: nn.Module) -> None:
        self.part = part

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.part, False)


def _freeze(part: nn.Module) -> None:
    part.requires_grad_(False)
    # nn.Module.train calls each child's train(mode): an instance attribute wins
    object.__setattr__(part, "train", _StayInEval(part))
    part.eval()


def _submodule(model: nn.Module, name: str) -> nn.Module:
    if name == "":
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children()) or "(none)"
        raise ConfigError(f"scope {name!r} names no submodule; top-level children: "
                          f"{children}") from None


def _convertible(part: nn.Module, prefix: str) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """(layers to convert, names of Linear/Conv2d left alone) inside ``part``."""
    layers, skipped = [], []
    for name, m in part.named_modules(prefix=prefix):
        if isinstance(m, BioLayer) or not isinstance(m, (nn.Linear, nn.Conv2d)):
            continue
        base = nn.Linear if isinstance(m, nn.Linear) else nn.Conv2d
        if type(m).forward is not base.forward or hasattr(m, "parametrizations"):
            skipped.append(name)
        else:
            layers.append((name, m))
    return layers, skipped


def _dfa_tap(model: nn.Module, output_dim: int | None) -> DFATap:
    """The model's DFA hooks (created once), checked against ``output_dim``."""
    tap: DFATap | None = getattr(model, _TAP_ATTR, None)
    if output_dim is None:
        output_dim = tap.output_dim if tap else _last_linear_width(model)
    if tap is not None:
        if tap.output_dim != output_dim:
            raise ConfigError(f"dfa output_dim={output_dim} differs from the "
                              f"{tap.output_dim} this model was converted with")
        return tap
    tap = DFATap(int(output_dim))
    model.register_forward_pre_hook(tap.pre)
    model.register_forward_hook(tap.post)
    setattr(model, _TAP_ATTR, tap)
    return tap


def _last_linear_width(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("dfa needs output_dim (features of the model output): pass "
                          "convert(..., output_dim=N); the model has no nn.Linear to infer it")
    return linears[-1].out_features
