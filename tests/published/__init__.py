"""Independent float64 reference implementations of published attention mechanisms.

Each module here is plain PyTorch, written from the paper's math and the official / timm
source layout, and holds its parameters under the official checkpoint names and shapes, so
that attndsl's compiled modules and its checkpoint conversion can be checked numerically
against them with identical weights.  Inputs and outputs are channels-last (B, H, W, C)
maps; every module takes ``seed`` (to fill all parameters with realistic random values)
and ``dtype`` (float64 by default).  Nothing here imports attndsl or timm.
"""
