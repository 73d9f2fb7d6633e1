"""CrossFormer long-distance attention against tests/published/crossformer.py (kind
"lda", the classification release: fixed group size)."""
from mechanisms.crossformer_sda import reference as _reference


def reference(m, x):
    return _reference(m, x, kind="lda")
