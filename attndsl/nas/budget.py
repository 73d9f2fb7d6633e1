"""The budget: device-seconds (`50gpu-h`, `2h`, `12m`, `90s`) or a trial count (`40trials`),
and the ledger that spends it.

A device-hour is devices × wall-clock, as HPC centres bill a GPU-hour. Every trial's cost
(subprocess start-up, compile, throughput measurement, training; failed, pruned and
infeasible trials included) is written to the study storage as it accrues, so the ledger —
the sum over every trial of its recorded cost — survives a crash and is shared by every
worker on the study. On a machine with no GPU the unit is this machine's device-hours (one
CPU device), and every output says so.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from ..errors import AttndslError, SpecError

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "gpu-h": 3600,
          "gpuh": 3600, "device-h": 3600, "d": 86400}
COST_ATTR = "cost_s"


class SearchStopped(AttndslError):
    """The search cannot start (the budget is spent, the run directory holds another space)."""


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None     # device-seconds
    trials: int | None = None
    text: str = ""

    def describe(self, unit: str = "device") -> str:
        if self.trials is not None:
            return f"{self.trials} trials"
        return f"{self.seconds / 3600:.3g} {unit}-h"


def parse_budget(text) -> Budget:
    """`50gpu-h`, `1.5h`, `12m`, `90s`, `40trials` → Budget."""
    raw = str(text).strip().lower().replace(" ", "")
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(trials?|[a-z-]+)", raw)
    if match:
        number, unit = float(match.group(1)), match.group(2)
        if unit.startswith("trial"):
            if number != int(number) or number < 1:
                raise SpecError(f"budget {text!r}: a trial count is a positive integer",
                                path="budget")
            return Budget(trials=int(number), text=str(text))
        if unit in _UNITS and number > 0:
            return Budget(seconds=number * _UNITS[unit], text=str(text))
    raise SpecError(f"budget {text!r} is not understood; write device time as 50gpu-h, 2h, "
                    "12m or 90s, or a trial count as 40trials", path="budget")


def trial_cost(trial) -> float:
    return float(trial.user_attrs.get(COST_ATTR, 0.0))


def spent(trials) -> float:
    """The ledger: device-seconds recorded by every trial of the study."""
    return sum(trial_cost(t) for t in trials)


def counted_trials(trials) -> int:
    """Trials that count against a trial budget: those started, except the interrupted ones
    that were re-queued (their re-run counts instead) — by a worker (`requeued`) or by a
    database's heartbeat check (the re-run's `failed_trial` names them)."""
    trials = list(trials)
    retried = {getattr(t, "system_attrs", {}).get("failed_trial") for t in trials} - {None}
    return sum(1 for t in trials if t.state.name != "WAITING" and not t.user_attrs.get("requeued")
               and getattr(t, "number", None) not in retried)


def predicted_cost(trials) -> float:
    """What the next trial will likely cost: the median cost of completed trials (a trial
    that is not pruned costs the most), else of every finished trial, else 0 (unknown)."""
    complete = [trial_cost(t) for t in trials if t.user_attrs.get("state") == "complete"
                and not t.user_attrs.get("duplicate_of")]
    finished = [trial_cost(t) for t in trials if t.user_attrs.get("state") in (
        "complete", "pruned", "failed", "infeasible") and not t.user_attrs.get("duplicate_of")]
    sample = complete[-20:] or finished[-20:]
    return statistics.median(sample) if sample else 0.0


def admission(budget: Budget, trials, running: int = 0) -> tuple[bool, str]:
    """May another trial start? (yes/no, and why not)."""
    if budget.trials is not None:
        used = counted_trials(trials)
        if used >= budget.trials:
            return False, f"the trial budget is spent: {used} of {budget.trials} trials run"
        return True, ""
    used = spent(trials)
    left = budget.seconds - used
    if left <= 0:
        return False, (f"the budget is spent: {used / 3600:.3f} of {budget.seconds / 3600:.3f} "
                       f"device-h ({used:.0f} of {budget.seconds:.0f} device-s)")
    need = predicted_cost(trials)
    if need > left:
        return False, (f"the next trial would likely cost {need:.0f} device-s (median of "
                       f"completed trials) but {left:.0f} of {budget.seconds:.0f} are left; "
                       f"spent {used:.0f}")
    return True, ""
