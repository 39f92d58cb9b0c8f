"""Hashing losses (the old ``-loss`` names) and the penalties added to any loss.

``create_loss(name, nbits=..., num_classes=..., penalty=..., similar_probability=...)``
builds a :class:`HashLoss`; ``loss(u, y)`` takes the raw hash-layer output and
float multi-hot labels and returns ``LossOutput(total, parts)``. By default
every loss computes exactly what h2q computed. Registered: DCH, DPSH, HyP2,
DSH, DHN, WGLHH, HashNet, CEL, and the opt-in DHN_paper (see ``LOSSES.names()``).
"""
from biohash.losses.base import (
    LOSSES,
    HashLoss,
    LossOutput,
    create_loss,
    hswd_penalty,
    l2_quantization,
    similarity,
)
from biohash.losses.pairwise import DCH, DHN, DPSH, DSH, WGLHH, DHN_paper, HashNet
from biohash.losses.proxy import CEL, HyP2, separation

__all__ = ["LOSSES", "HashLoss", "LossOutput", "create_loss", "separation",
           "l2_quantization", "hswd_penalty", "similarity",
           "DSH", "DPSH", "DHN", "DHN_paper", "DCH", "WGLHH", "HashNet", "HyP2", "CEL"]
