"""The hashing-loss contract, the shared penalties and the loss registry.

Every loss takes the RAW hash-layer output ``u`` (B x nbits, before any tanh)
and float multi-hot labels ``y`` (B x L), applies its own activation
(``z = tanh(u)`` unless ``no_cube``), and returns a :class:`LossOutput`:
``total`` to back-propagate and ``parts`` (detached scalars) to log, with
``total == sum(parts.values())``. The loss is always computed in float32
(``u`` is cast and autocast is disabled inside), so bf16/fp16 training
cannot underflow the pairwise terms.

By default every loss computes what h2q's ``src/utils/losses.py`` and its
Lightning ``training_step`` computed (arXiv:2311.04207 code base):

* every pair mean is over all B x B entries, the diagonal i = j included
  (so a batch of one item is defined: h2q keeps the last partial batch);
* S = [y_i · y_j > 0]; DCH, WGLHH and HashNet weight pairs by
  w = S/p + (1-S)/(1-p), p = ``similar_probability``, the train fold's
  similar-pair probability (diagonal included);
* the extra penalties are added to any loss (HyP2 multiplies them by its λ,
  see ``proxy.py``; the old fork silently dropped both):

  - ``l2_penalty · mean_b Σ_k (z - sign z)²``;
  - ``hswd_penalty · Σ_{k,b} (sort(z[:, k])_b - sort(r[:, k])_b)² / B / nbits``,
    the per-bit squared 1-D Wasserstein-2 distance between the batch's codes
    and a random ±1 matrix r of z's shape, drawn afresh every step
    (``hswd_sample="random"``, h2q's). h2q drew r from the global RNG;
    here it comes from a ``torch.Generator`` owned by the loss, seeded with
    ``seed`` (the trial seed) and saved in ``state_dict`` (via
    ``get_extra_state``), so runs are reproducible, a resumed run draws the
    same sequence, and the data order does not depend on ``HSWD_penalty``.
    ``hswd_sample="balanced"`` (opt-in) uses the expected sorted sample
    instead: half -1, half +1 (the odd one out +1), no draw.

Learnable loss parameters (HyP2's class proxies) are ``HashLoss.parameters()``;
the trainer optimises them in their own param group with lr 1e-3, as h2q did.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biohash.config import HSWD_SAMPLES
from biohash.errors import ConfigError
from biohash.registry import Registry

__all__ = ["LOSSES", "HashLoss", "LossOutput", "create_loss", "similarity", "cosine",
           "pair_weights", "safe_ratio", "l2_quantization", "hswd_penalty"]

#: Loss classes by their old ``-loss`` names (case-sensitive, no '-': run
#: names are split on '-').
LOSSES: Registry[Callable[..., "HashLoss"]] = Registry("loss")

#: torch.nn.CosineSimilarity's default: each norm is clamped at this value.
COS_EPS = 1e-8


class LossOutput(NamedTuple):
    """``total``: scalar to back-propagate; ``parts``: detached weighted terms."""

    total: Tensor
    parts: dict[str, Tensor]


def similarity(y: Tensor) -> Tensor:
    """S (B, B) float: 1 where two items share a label (``y_i · y_j > 0``)."""
    return (y @ y.T > 0).float()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """(Ba, Bb) cosine similarities of the rows of ``a`` and ``b``, each norm
    clamped at 1e-8.

    Computed exactly as h2q (``nn.CosineSimilarity()`` on broadcast
    (Ba, nbits, 1) x (1, nbits, Bb) views, O(B²·nbits) memory), not as a
    product of normalised rows: the two differ by float rounding only, but
    some h2q terms amplify that rounding, e.g. DCH's log(1 + γ/d) on the
    self-pair of an unlabelled item (S = 0 on the diagonal, d ≈ 1e-5·nbits),
    where 1e-7 in cos moves the batch loss by ~1e-5 relative.
    """
    return F.cosine_similarity(a[:, :, None], b.T[None, :, :], dim=1, eps=COS_EPS)


def pair_weights(s: Tensor, p: float) -> Tensor:
    """w = S/p + (1-S)/(1-p): similar and dissimilar pairs weigh the same in total
    when p is the fraction of similar pairs."""
    return s / p + (1 - s) / (1 - p)


def safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` for a masked mean ratio, 0 where the mask is empty.

    ``den`` is the mean of a 0/1 mask and ``num`` the mean of the mask times
    finite values, so ``den == 0`` implies ``num == 0`` exactly: dividing by
    the clamped ``den`` gives 0 (and a zero gradient) instead of h2q's 0/0
    NaN, and changes nothing when the mask is not empty (``den >= 1/B²``).
    """
    return num / den.clamp(min=torch.finfo(den.dtype).tiny)


def l2_quantization(z: Tensor) -> Tensor:
    """mean_b Σ_k (z - sign z)²."""
    return (z - z.detach().sign()).pow(2).sum(dim=1).mean()


def hswd_penalty(z: Tensor, target: Tensor) -> Tensor:
    """Σ_{k,b} (sort(z[:, k]) - sort(target[:, k]))² / B / nbits.

    ``target`` is (B, nbits) or a (B,) column used for every bit.
    """
    sorted_z, _ = torch.sort(z, dim=0)  # (B, nbits)
    if target.ndim == 1:
        target = target[:, None]
    sorted_t, _ = torch.sort(target, dim=0)
    return (sorted_z - sorted_t).pow(2).sum() / z.shape[0] / z.shape[1]


def _balanced_column(batch: int, like: Tensor) -> Tensor:
    """(B,): the expected sorted Rademacher sample, B//2 times -1, then +1s."""
    target = torch.ones(batch, dtype=like.dtype, device=like.device)
    target[: batch // 2] = -1.0
    return target


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")


def _check_probability(value: Any) -> None:
    if value is None:
        return
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not 0 < value < 1):
        raise ConfigError(f"similar_probability must be a number in (0, 1) (the train fold's "
                          f"similar-pair probability); got {value!r}")


class HashLoss(nn.Module):
    """Base class: activation, penalties, float32, ``LossOutput``.

    Subclasses implement :meth:`terms` (``z`` after the activation, ``y``
    float labels) returning the loss's own weighted terms; ``penalty`` is the
    loss's own weight λ (quantization weight, or HyP2's pair-term weight).
    A subclass that weights pairs by ``similar_probability`` sets
    ``needs_similar_probability``; one whose λ also multiplies the L2/HSWD
    penalties (HyP2) sets ``penalties_inside_lambda``.
    """

    needs_similar_probability = False
    penalties_inside_lambda = False

    def __init__(self, *, nbits: int, num_classes: int, penalty: float,
                 l2_penalty: float = 0.0, hswd_penalty: float = 0.0,
                 no_cube: bool = False, similar_probability: float | None = None,
                 seed: int = 0, hswd_sample: str = "random") -> None:
        super().__init__()
        _check_int("nbits", nbits, 1)
        _check_int("num_classes", num_classes, 1)
        _check_int("seed", seed, 0)
        for name, value in (("penalty", penalty), ("L2_penalty", l2_penalty),
                            ("HSWD_penalty", hswd_penalty)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
        _check_probability(similar_probability)
        if self.needs_similar_probability and similar_probability is None:
            raise ConfigError(f"loss {type(self).__name__} weights pairs by the train fold's "
                              f"similar_probability, a number in (0, 1); got None")
        if hswd_sample not in HSWD_SAMPLES:
            raise ConfigError(f"hswd_sample must be one of {', '.join(HSWD_SAMPLES)}; "
                              f"got {hswd_sample!r}")
        self.nbits, self.num_classes = nbits, num_classes
        self.penalty, self.l2_penalty, self.hswd_penalty = (
            float(penalty), float(l2_penalty), float(hswd_penalty))
        self.no_cube = bool(no_cube)
        self.similar_probability = (None if similar_probability is None
                                    else float(similar_probability))
        self.seed, self.hswd_sample = seed, hswd_sample
        # CPU generator: the same draws on every device; its state is extra state.
        self.hswd_generator = torch.Generator().manual_seed(seed)

    def activation(self, u: Tensor) -> Tensor:
        return u if self.no_cube else torch.tanh(u)

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def hswd_target(self, z: Tensor) -> Tensor:
        """HSWD's ±1 sample for this step: (B, nbits) random, or (B,) balanced."""
        if self.hswd_sample == "balanced":
            return _balanced_column(z.shape[0], z)
        bits = torch.randint(0, 2, z.shape, generator=self.hswd_generator)  # (B, nbits) CPU
        return (2 * bits - 1).to(device=z.device, dtype=z.dtype)

    def forward(self, u: Tensor, y: Tensor) -> LossOutput:
        if u.ndim != 2 or u.shape[1] != self.nbits or u.shape[0] < 1:
            raise ConfigError(f"hash output must be (batch >= 1, {self.nbits}); "
                              f"got {tuple(u.shape)}")
        if y.ndim != 2 or y.shape[0] != u.shape[0]:
            raise ConfigError(f"labels must be (batch, classes) matching the hash output's "
                              f"batch {u.shape[0]}; got {tuple(y.shape)}")
        with torch.autocast(device_type=u.device.type, enabled=False):
            z = self.activation(u.float())  # (B, nbits)
            parts = self.terms(z, y.float())
            scale = self.penalty if self.penalties_inside_lambda else 1.0
            if self.l2_penalty > 0:
                parts["l2"] = scale * self.l2_penalty * l2_quantization(z)
            if self.hswd_penalty > 0:
                parts["hswd"] = scale * self.hswd_penalty * hswd_penalty(z, self.hswd_target(z))
            total = torch.stack(list(parts.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def get_extra_state(self) -> dict[str, Tensor]:
        """The HSWD generator's state, so a resumed run draws the same targets."""
        return {"hswd_generator": self.hswd_generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.hswd_generator.set_state(state["hswd_generator"].cpu())

    def extra_repr(self) -> str:
        return (f"nbits={self.nbits}, num_classes={self.num_classes}, penalty={self.penalty}, "
                f"l2_penalty={self.l2_penalty}, hswd_penalty={self.hswd_penalty}, "
                f"no_cube={self.no_cube}, similar_probability={self.similar_probability}, "
                f"seed={self.seed}, hswd_sample={self.hswd_sample!r}")


def create_loss(name: str, *, nbits: int, num_classes: int, penalty: float,
                l2_penalty: float = 0.0, hswd_penalty: float = 0.0,
                no_cube: bool = False, similar_probability: float | None = None,
                seed: int = 0, hswd_sample: str = "random") -> HashLoss:
    """Build the registered loss ``name`` (e.g. ``"DCH"``).

    ``similar_probability`` is the train fold's similar-pair probability
    (the data store's value); DCH, WGLHH and HashNet require it, the others
    ignore it. ``seed`` seeds HSWD's random targets (the trial seed).

    Raises:
        ConfigError: unknown name (the message lists the registered ones),
            a non-positive size, a negative or non-finite weight, a
            ``similar_probability`` outside (0, 1) (or missing where
            needed), an unknown ``hswd_sample``, or (HyP2, CEL) a bit or
            class count outside h2q's separation table.
    """
    cls = LOSSES.get(name)
    return cls(nbits=nbits, num_classes=num_classes, penalty=penalty,
               l2_penalty=l2_penalty, hswd_penalty=hswd_penalty, no_cube=no_cube,
               similar_probability=similar_probability, seed=seed, hswd_sample=hswd_sample)
