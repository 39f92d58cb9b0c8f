"""Biologically plausible learning rules for Linear/Conv2d layers.

``MODES`` (bp, fa, usf, frsf, brsf, dfa) names the rules; ``convert`` turns a
model's layers into ``BioLinear``/``BioConv2d`` for one rule or per part
(Hybrid Bio-Training); ``alignment_angles``/``gradient_alignment`` are the
per-layer diagnostics. See ``biohash.bio.rules`` for the B of each rule and
``biohash.bio.convert`` for DFA's behaviour on skip connections.
"""
from biohash.bio.convert import convert, is_bio
from biohash.bio.diagnostics import alignment_angles, gradient_alignment
from biohash.bio.layers import BioConv2d, BioLinear
from biohash.bio.rules import FROZEN, INITS, MODES

__all__ = ["MODES", "INITS", "FROZEN", "BioLinear", "BioConv2d", "convert", "is_bio",
           "alignment_angles", "gradient_alignment"]
