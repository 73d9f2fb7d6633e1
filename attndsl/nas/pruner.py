"""Pareto-aware multi-fidelity pruning (MO-ASHA; Schmucker et al., "Multi-objective
Asynchronous Successive Halving", 2021).

Optuna cannot prune a multi-objective study (`trial.report` raises; optuna#3450), so the
search does it here: epochs are the resource, rungs sit at r·η^k epochs. When a trial
reaches a rung, every result recorded at that rung (rung accuracy; throughput, known before
training) is ranked by non-dominated sorting — peel the Pareto fronts one after another —
with ties inside a front broken by crowding distance (boundary points first). The trial
continues if it is on the first front (a non-dominated trial is never stopped) or if its
position in that order is within the top ⌈n/η⌉; otherwise it is pruned.

Objectives are maximised. Points are tuples (accuracy, throughput).
"""
from __future__ import annotations

import math
from typing import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """a dominates b: at least as good in every objective and better in one (maximising)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def nondominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of points, front by front (front 0 = the Pareto front)."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        front = [i for i in remaining
                 if not any(dominates(points[j], points[i]) for j in remaining if j != i)]
        fronts.append(front)
        remaining = [i for i in remaining if i not in front]
    return fronts


def crowding_distance(points: Sequence[Point], front: list[int]) -> dict[int, float]:
    """NSGA-II's crowding distance inside one front (boundary points are infinite). It is
    computed on the distinct points, so equal points get equal distances whatever their
    order (NSGA-II's sort would favour whichever came first)."""
    distinct = sorted({tuple(points[i]) for i in front})
    if len(distinct) <= 2:
        return {i: math.inf for i in front}
    distance = {p: 0.0 for p in distinct}
    for k in range(len(distinct[0])):
        ordered = sorted(distinct, key=lambda p: p[k])
        low, high = ordered[0][k], ordered[-1][k]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[here] += (after[k] - before[k]) / (high - low)
    return {i: distance[tuple(points[i])] for i in front}


def rank_order(points: Sequence[Point], last: int | None = None) -> list[int]:
    """All indices, best first: by front, then by crowding distance (larger first); ties by
    index (earlier first), except that `last` goes after everything it ties with."""
    order = []
    for front in nondominated_fronts(points):
        crowd = crowding_distance(points, front)
        order.extend(sorted(front, key=lambda i: (-crowd[i], i == last, i)))
    return order


def keep_at_rung(point: Point, others: Sequence[Point], eta: int) -> bool:
    """Does a trial that reached a rung with `point` continue, given the `others` recorded
    at that rung? True if it is non-dominated among them all, or ranks in the top ⌈n/η⌉."""
    points = [tuple(point), *map(tuple, others)]
    if not any(dominates(q, points[0]) for q in points[1:]):
        return True
    # the trial loses every tie (equal front and crowding): which trial reaches a rung first
    # must not decide who continues, and so no more than the top share continue
    position = rank_order(points, last=0).index(0)
    return position < math.ceil(len(points) / eta)


def hypervolume_2d(points: Sequence[Point], reference: Point = (0.0, 0.0)) -> float:
    """Area dominated by the points (maximising both) above the reference point."""
    pts = sorted({(a, b) for a, b in points if a > reference[0] and b > reference[1]},
                 key=lambda p: (-p[0], -p[1]))
    area, best_b = 0.0, reference[1]
    for a, b in pts:      # sweep accuracy downwards, adding the new throughput slab
        if b > best_b:
            area += (a - reference[0]) * (b - best_b)
            best_b = b
    return area
