"""The learning rules as small spec objects, registered in ``MODES``.

A rule decides one thing: the matrix B that replaces the forward weight W in
a layer's gradient to its input (the weight and bias gradients stay exact).
References: Lillicrap et al. 2016 (fa), Liao, Leibo & Poggio 2016 (usf,
frsf, brsf), Noekland 2016 (dfa); BioTorch (Sanfiz & Akrout 2021) for the
naming.

Feedback scale ("std") of a layer comes from its init, computed on the
weight's fans (``fan_in = in * k_h * k_w``, ``fan_out = out * k_h * k_w``):

* ``xavier`` (default): std = sqrt(2 / (fan_in + fan_out))
* ``kaiming``:          std = sqrt(2 / fan_in)

Random draws are uniform with that std, i.e. U(-sqrt(3)*std, sqrt(3)*std)
(``xavier`` is then exactly torch's Xavier-uniform). ``usf`` uses B = std *
sign(W), so its scale is the Xavier std by default. ``frsf``/``brsf`` use
magnitudes |M| ~ U(0, sqrt(3)*std) with the sign of W (``copysign``: a zero
weight keeps the sign bit of its zero, so B is never 0 there).

Large Linear weights are processed in blocks (``weight_chunks``: CPU tiles
of ``CHUNK_ELEMS_CPU``, GPU column blocks of ``CHUNK_ELEMS`` elements), so a sign-concordant or
per-batch B is never materialised whole (a VGG16 fc1 B would be 400 MB on
top of backprop's working memory).

``brsf`` draws |M_t| as one random byte per weight (eight per 64-bit draw),
the midpoints of 256 equal bins of U(0, sqrt(3)*std): same mean and nearly
the same variance, never 0, and ~8x cheaper than ``torch.rand`` on CPU, where B is
redrawn for every weight on every step. The draw is built in row blocks of at
most ``DRAW_BLOCK_CPU`` elements (one reused byte buffer, each block finished
while in cache) as B = scale * T with T = copysign(k + 0.5, W), k the byte:
the hot paths apply ``scale`` to the (small) gradient instead of to B
(``Rule.factors``). The byte stream is one generator's (NumPy's PCG64 on CPU:
torch's CPU generator, a Mersenne Twister, took ~2x as long), consumed in
order, so blocking does not change it.

When M_t is drawn: in the *backward* of the layer's autograd node, from the
layer's counter (``Feedback.drawn``), not in its forward. A training step
(one forward, one backward) therefore draws once, as a per-forward draw
would, but a forward that is run again by ``torch.utils.checkpoint``
recomputation, or a forward whose output is never backpropagated, draws
nothing: the recomputed forward cannot shift the B sequence, and the node
whose backward runs is the one that draws.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from biohash.config import FROZEN  # the scope pseudo-mode "frozen", defined once (torch-free)
from biohash.registry import Registry

__all__ = ["MODES", "INITS", "FROZEN", "Rule", "Feedback", "ErrorSlot", "derive_seed",
           "step_seed", "fans", "feedback_std", "weight_chunks", "part_offset", "Part", "WHOLE",
           "CHUNK_ELEMS", "CHUNK_ELEMS_CPU", "TILE_COLS_CPU", "DRAW_BLOCK_CPU"]

#: Largest B chunk (elements) materialised at once for a Linear layer (GPU, CPU).
CHUNK_ELEMS = 1 << 24
CHUNK_ELEMS_CPU = 1 << 18  # 1 MiB of float32: an L2 on many CPUs, well inside any L3
#: Widest CPU tile of a big Linear's B (columns): W's rows are read in runs of 4 KiB.
TILE_COLS_CPU = 1 << 10
#: Largest block of a brsf draw built at once on CPU: its bytes, T and W's block stay in
#: cache between the four passes (a Linear tile is one block).
DRAW_BLOCK_CPU = CHUNK_ELEMS_CPU
#: brsf magnitudes: 256 levels (one byte each, 8 per 64-bit draw) spanning U(0, bound).
_LEVELS = 1 << 8

_MASK64 = (1 << 64) - 1

#: Feedback init: name -> std(fan_in, fan_out).
INITS: Registry[Callable[[int, int], float]] = Registry("feedback init")
INITS.register("xavier", lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)))
INITS.register("kaiming", lambda fan_in, fan_out: math.sqrt(2.0 / fan_in))


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear/Conv weight shape, as torch.nn.init does."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def derive_seed(seed: int, key: str) -> int:
    """A 63-bit seed for ``key`` (a layer's qualified name), stable across processes."""
    digest = hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def step_seed(seed: int, step: int) -> int:
    """SplitMix64 of (seed, step): a cheap per-forward seed for ``brsf``."""
    z = (seed + (step + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


#: A weight index selecting a block of B: ``(rows, cols)``.
Part = tuple[slice, slice]
WHOLE: Part = (slice(None), slice(None))


def weight_chunks(shape: torch.Size | tuple[int, ...], device: torch.device) -> list[Part]:
    """Blocks ``(rows, cols)`` covering a weight; one block unless a big Linear.

    CPU: tiles of at most ``CHUNK_ELEMS_CPU`` elements and ``TILE_COLS_CPU``
    columns, ordered column block by column block (row tiles of one column
    block in a row). A tile of B fits in cache, so building it and reading
    it back in the matmul costs little; W's tile is read as contiguous runs
    of ``TILE_COLS_CPU`` floats (full-height column blocks 64 floats wide
    made every row a separate page: the sign-concordant rules' reads of W
    were ~3.5x slower than contiguous ones); and each tile's product
    ``g[:, rows] @ B[rows, cols]`` keeps an inner dimension of hundreds
    (flat row blocks of a few rows gave tiny-K products: ~2.3x bp on VGG16's
    fc1). GPUs get full-height column blocks of ``CHUNK_ELEMS``, to keep the
    kernel count low.
    """
    cpu = device.type == "cpu"
    limit = CHUNK_ELEMS_CPU if cpu else CHUNK_ELEMS
    if len(shape) != 2 or shape[0] * shape[1] <= limit:
        return [WHOLE]
    n_rows, n_cols = shape
    if not cpu:
        cols = max(16, limit // n_rows)  # >= 16 floats: whole cache lines per row
        return [(slice(None), slice(c, min(c + cols, n_cols))) for c in range(0, n_cols, cols)]
    cols = -(-n_cols // -(-n_cols // TILE_COLS_CPU))  # equal widths <= TILE_COLS_CPU
    rows = max(1, limit // cols)
    return [(slice(r, min(r + rows, n_rows)), slice(c, min(c + cols, n_cols)))
            for c in range(0, n_cols, cols) for r in range(0, n_rows, rows)]


def part_offset(part: Part, n_cols: int) -> int:
    """Flat index of a block's first element in its weight (0 for the whole weight)."""
    return (part[0].start or 0) * n_cols + (part[1].start or 0)


class ErrorSlot:
    """Holds dL/d(model output) of one forward pass, filled during backward (dfa)."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Tensor | None = None


class Feedback(NamedTuple):
    """What one forward pass of a bio layer needs in its backward.

    Immutable and made per call (a tuple: cheap). A ``brsf`` forward records
    ``draw`` (its layer's counter), and its backward calls ``drawn()`` once:
    each autograd node that is backpropagated gets its own B, and a forward
    whose node never runs backward (checkpoint recomputation) draws nothing.
    """

    rule: "Rule"
    buffer: Tensor | None  # fa: B; frsf: |M|; dfa: projection (in, output_dim)
    std: float
    seed: int  # brsf: the seed of the draw B comes from (set by ``drawn``)
    slot: ErrorSlot | None = None  # dfa: where the output error appears
    draw: Callable[[], int] | None = None  # brsf: advances the layer's counter -> seed

    def drawn(self) -> "Feedback":
        """This feedback with its B fixed: per-step rules draw their seed now."""
        return self if self.draw is None else self._replace(seed=self.draw(), draw=None)

    def matrix(self, weight: Tensor, part: "Part" = (slice(None), slice(None)),
               out: Tensor | None = None) -> Tensor:
        """The block ``part`` of B (weight-shaped rules only; see ``weight_chunks``).

        Rules that compute B write it into ``out`` when given (a scratch
        reused across chunks); others return a view. Use the return value.
        """
        return self.rule.matrix(self, weight, part, out)

    def factors(self, weight: Tensor, part: "Part" = (slice(None), slice(None)),
                out: Tensor | None = None) -> tuple[Tensor, float]:
        """``(T, scale)`` with B[part] = scale * T, as ``matrix`` otherwise.

        Scaling the gradient (batch-sized) instead of B (weight-sized) saves
        one pass over B for the rules that compute it every step.
        """
        return self.rule.factors(self, weight, part, out)


class Rule:
    """A learning rule. Subclasses override what differs from backprop."""

    name: str = ""
    summary: str = ""
    #: B is drawn per forward pass (the layer counts its forward passes).
    per_step: bool = False
    #: B has the sign of W (the diagnostics check this).
    sign_concordant: bool = False
    #: dfa: grad-to-input is a projection of the model's output error.
    direct: bool = False
    #: B is the ``feedback`` buffer itself (used without any copy).
    stored: bool = False

    def draw_buffer(self, weight: Tensor, in_size: int, init: str, gen: torch.Generator,
                    output_dim: int | None) -> Tensor | None:
        """The persistent ``feedback`` buffer (CPU, float32), or None.

        ``in_size`` is the layer's input features / channels (not the
        per-group count), ``output_dim`` the model output size (dfa only).
        """
        return None

    def matrix(self, fb: Feedback, weight: Tensor, part: Part,
               out: Tensor | None = None) -> Tensor:
        return weight[part]

    def factors(self, fb: Feedback, weight: Tensor, part: Part,
                out: Tensor | None = None) -> tuple[Tensor, float]:
        return self.matrix(fb, weight, part, out), 1.0

    def __repr__(self) -> str:
        return f"<rule {self.name}: {self.summary}>"


def feedback_std(init: str, fan_in: int, fan_out: int) -> float:
    """The std of B for ``init`` (see the module docstring)."""
    return INITS.get(init)(fan_in, fan_out)


def _bound(init: str, fan_in: int, fan_out: int) -> float:
    return math.sqrt(3.0) * feedback_std(init, fan_in, fan_out)


def _uniform(shape: Any, bound: float, gen: torch.Generator) -> Tensor:
    return torch.empty(shape).uniform_(-bound, bound, generator=gen)


class Backprop(Rule):
    name, summary = "bp", "exact backprop: B = W"


class FeedbackAlignment(Rule):
    name, summary = "fa", "fixed random B, drawn once"
    stored = True

    def draw_buffer(self, weight, in_size, init, gen, output_dim):
        return _uniform(weight.shape, _bound(init, *fans(weight.shape)), gen)

    def matrix(self, fb, weight, part, out=None):
        return fb.buffer[part]


class UniformSignConcordant(Rule):
    name, summary = "usf", "B = std * sign(W), follows W's sign every step"
    sign_concordant = True

    def matrix(self, fb, weight, part, out=None):
        return torch.sign(weight[part], out=out).mul_(fb.std)

    def factors(self, fb, weight, part, out=None):
        return torch.sign(weight[part], out=out), fb.std


class FixedRandomSignConcordant(Rule):
    name, summary = "frsf", "B = |M| with sign(W), M drawn once"
    sign_concordant = True

    def draw_buffer(self, weight, in_size, init, gen, output_dim):
        return _uniform(weight.shape, _bound(init, *fans(weight.shape)), gen).abs_()

    def matrix(self, fb, weight, part, out=None):
        return torch.copysign(fb.buffer[part], weight[part], out=out)


class BatchRandomSignConcordant(Rule):
    """|M_t| is redrawn for every training step from a per-draw seed.

    The draw happens in backward (from the seed ``Feedback.drawn`` takes),
    so no weight-sized tensor is kept between forward and backward; each
    block has its own seed (from its flat offset) so the same B can be rebuilt for
    diagnostics. See the module docstring for the byte levels and blocking.
    """

    name, summary = "brsf", "B = |M_t| with sign(W), M_t redrawn every training step"
    sign_concordant = True
    per_step = True

    def matrix(self, fb, weight, part, out=None):
        t, scale = self.factors(fb, weight, part, out)
        return t.mul_(scale)

    def factors(self, fb, weight, part, out=None):
        w = weight[part]  # (rows, ...): a Linear block or a whole conv weight
        t = out if out is not None else torch.empty(w.shape, dtype=w.dtype, device=w.device)
        rows = _draw_rows(w)
        draw = _byte_stream(step_seed(fb.seed, part_offset(part, weight.shape[-1])), w.device,
                            rows * w[0].numel())
        for r in range(0, w.shape[0], rows):
            w_blk, t_blk = w[r:r + rows], t[r:r + rows]
            t_blk.copy_(draw(w_blk.numel()).view(w_blk.shape))  # k in 0..255
            # k + 0.5: midpoints of 256 equal bins (never 0); the sign is W's
            t_blk.add_(0.5).copysign_(w_blk)
        return t, math.sqrt(3.0) * fb.std / _LEVELS


def _byte_stream(seed: int, device: torch.device, most: int) -> Callable[[int], Tensor]:
    """``take(n)``: the next ``n`` random bytes (uint8, on ``device``) of the
    stream ``seed`` names, read as little-endian bytes of 64-bit draws, each
    call starting at a fresh draw (``n`` is at most ``most``).

    CPU: NumPy's PCG64 (~2x the speed of torch's CPU generator, Mersenne
    Twister, which was half of a brsf step's extra cost); other devices:
    torch's generator there, into one reused buffer.
    """
    if device.type == "cpu":
        bits = np.random.PCG64(seed)
        # little-endian bytes as documented (astype is a no-op on little-endian hosts)
        return lambda n: torch.from_numpy(
            bits.random_raw((n + 7) // 8).astype("<u8", copy=False).view(np.uint8)[:n])
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    buffer = torch.empty((most + 7) // 8, dtype=torch.int64, device=device)

    def take(n: int) -> Tensor:
        draw = buffer[:(n + 7) // 8]
        draw.random_(-(2**63), None, generator=gen)  # 64 random bits: 8 byte levels
        return draw.view(torch.uint8)[:n]
    return take


def _draw_rows(w: Tensor) -> int:
    """Rows of ``w`` per block of a brsf draw: all on GPU; on CPU a multiple of 8.

    Every block but the last then consumes whole 64-bit draws, so the byte
    stream is exactly that of one draw over all of ``w``.
    """
    if w.device.type != "cpu":
        return w.shape[0]
    rows = DRAW_BLOCK_CPU // w[0].numel()
    return max(8, rows - rows % 8)


class DirectFeedbackAlignment(Rule):
    """Each layer sends B_l e to its input, e = dL/d(model output).

    B_l has shape (in_features, output_dim) (Linear) or (in_channels,
    output_dim) (Conv2d: the projection is broadcast over H and W, so grouped
    and depthwise convs need nothing special). The layer below therefore
    receives (B_l e) * f'(a) through the exact derivative of the
    activation between them -- Noekland's rule with the matrix owned by the
    layer that sends it.
    """

    name, summary = "dfa", "grad-to-input = fixed random projection of the output error"
    direct = True

    def draw_buffer(self, weight, in_size, init, gen, output_dim):
        # B_l maps the output error (output_dim) onto the layer input (in_size)
        return _uniform((in_size, output_dim), _bound(init, output_dim, in_size), gen)

    def matrix(self, fb, weight, part, out=None):
        return fb.buffer


MODES: Registry[Rule] = Registry("mode")
for _rule in (Backprop(), FeedbackAlignment(), UniformSignConcordant(),
              FixedRandomSignConcordant(), BatchRandomSignConcordant(),
              DirectFeedbackAlignment()):
    MODES.register(_rule.name, _rule)
