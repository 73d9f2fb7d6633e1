"""Swin-V2 shifted-window attention (shift 3 in 7×7 windows) against
tests/published/swin_v2.py; see swin_v2_wmsa.py."""
from mechanisms.swin_v2_wmsa import reference as _window


def reference(m, x):
    return _window(m, x, shift=m.plan.branches[0].shift[0])
