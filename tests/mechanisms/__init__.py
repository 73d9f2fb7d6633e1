"""Independent references, one module per zoo mechanism added since the first zoo: each is
written from the paper's math in plain PyTorch (no code shared with attndsl) and reads the
compiled module's own parameter tensors, so forward and gradients compare on the same
weights. tests/zoo_references.py finds every module here."""
