"""MaxViT block attention (attndsl's window kind, no shift) against
tests/published/maxvit.py in mode "block"; the weights map as for the grid half
(tests/mechanisms/maxvit_grid.py: head_first=False, so qkv rows are [q; k; v])."""
from mechanisms.maxvit_grid import reference as _partition


def reference(m, x):
    return _partition(m, x, mode="block")
