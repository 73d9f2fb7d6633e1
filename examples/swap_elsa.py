"""Swap a Swin-like model's window attention for the zoo's ELSA and compare.

    .venv/bin/python examples/swap_elsa.py

Builds TinySwin (tiny_swin.py: timm's Swin structure and call conventions, 4 blocks at
56×56 tokens, C=96, 3 heads), then patches it twice:
  1. with the zoo's swin_wmsa / swin_swmsa — the same math, weights converted from the
     model's own (timm.swin layout): the outputs must agree;
  2. with the zoo's ELSA (fresh weights: ELSA has its own parameters),
and prints parameters and throughput (1 thread, median of the timed runs) for each.
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import attndsl                                # noqa: E402
from tiny_swin import TinySwin                # noqa: E402

torch.set_num_threads(1)
torch.manual_seed(0)
B, DIM, HEADS, RES = 8, 96, 3, (56, 56)


def throughput(model, img, repeats=5):
    with torch.no_grad():
        model(img)                            # warm-up (and compile)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(img)
            times.append(time.perf_counter() - t0)
    return img.shape[0] / statistics.median(times)


def params(model):
    return sum(p.numel() for p in model.parameters())


img = torch.randn(B, 3, 4 * RES[0], 4 * RES[1])
model = TinySwin(dim=DIM, heads=HEADS, res=RES, ws=7, depth=4).eval()
with torch.no_grad():
    y_before = model(img)
rows = [("original (eager PyTorch)", params(model), throughput(model, img))]

same = TinySwin(dim=DIM, heads=HEADS, res=RES, ws=7, depth=4).eval()
same.load_state_dict(model.state_dict())
swaps = [("swin_wmsa", attndsl.patch(same, "swin_wmsa", match="blocks.[02].attn", resolution=RES)),
         ("swin_swmsa", attndsl.patch(same, "swin_swmsa", match="blocks.[13].attn",
                                      resolution=RES))]
with torch.no_grad():
    err = (same(img) - y_before).abs().max().item()
rows.append(("attndsl swin_wmsa/swmsa (converted)", params(same), throughput(same, img)))

elsa = TinySwin(dim=DIM, heads=HEADS, res=RES, ws=7, depth=4).eval()
elsa.load_state_dict(model.state_dict())
swaps.append(("elsa", attndsl.patch(elsa, "elsa", match="WindowAttention", resolution=RES)))
rows.append(("attndsl ELSA (fresh weights)", params(elsa), throughput(elsa, img)))

print(f"TinySwin, 4 blocks, {RES[0]}×{RES[1]} tokens, C={DIM}, {HEADS} heads, batch {B}, "
      f"torch {torch.__version__}, {torch.get_num_threads()} thread")
for spec, report in swaps:
    patched = {}          # the modules patched alike, on one line
    for r in report:
        patched.setdefault((r.replaced, r.convention, r.weights), []).append(r.path)
    for (replaced, convention, weights), paths in patched.items():
        print(f"  {spec} in {', '.join(paths)} ({replaced} → {convention}): weights {weights}")
print(f"  swin_wmsa/swmsa swap, max |Δ output| vs the original: {err:.1e}")
print(f"{'model':38s} {'parameters':>12s} {'images/s':>10s}")
for name, n, ips in rows:
    print(f"{name:38s} {n:12,d} {ips:10.1f}")
