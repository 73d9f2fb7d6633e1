"""The live display of a search (rich): trial counts by state, device-hours spent and left,
the running trial, the current front, an ETA. Without a terminal (CI, a log file) it prints
one line per finished trial instead."""
from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .budget import Budget, counted_trials, spent


class Display:
    def __init__(self, study, budget: Budget, unit: str, title: str, *, enabled: bool = True,
                 quiet: bool = False, console: Console | None = None, show_running=False):
        self.show_running = show_running     # every worker's running trial, from the storage
        self.study, self.budget, self.unit, self.title = study, budget, unit, title
        self.console = console or Console(stderr=True, highlight=False)
        self.live_trial = None
        self.started = time.time()
        self.interactive = enabled and self.console.is_terminal
        self.quiet = quiet
        self._live = None
        self._last = 0.0
        self._reported: set[int] = set()

    def __enter__(self):
        if self.interactive:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(*exc)

    def refresh(self, force: bool = False) -> None:
        if self._live is None or (not force and time.time() - self._last < 0.5):
            return
        self._last = time.time()
        self._live.update(self.render())

    def trial_finished(self, trial_number: int) -> None:
        if self._live is not None:
            self.refresh(force=True)
            return
        if self.quiet or trial_number in self._reported:
            return
        self._reported.add(trial_number)
        t = self.study.get_trials(deepcopy=False)[trial_number]
        a = t.user_attrs
        acc = a.get("accuracy")
        ips = a.get("images_per_s")
        details = [a.get("reason", "")] if a.get("state") in ("failed", "infeasible") else []
        if a.get("duplicate_of") is not None:
            details.append(f"(duplicate of trial {a['duplicate_of']}, reused)")
        detail = " ".join(d for d in details if d)
        used = spent(self.study.get_trials(deepcopy=False))
        self.console.print(
            f"trial {trial_number:>3} {a.get('state', '?'):<10} "
            f"{'' if acc is None else f'acc {acc:.3f} '}"
            f"{'' if ips is None else f'{ips:,.0f} img/s '}"
            f"{detail} {a.get('name', '')}  [{a.get('cost_s', 0):.0f} s; spent "
            f"{used / 3600:.3f} {self.unit}-h]")

    # -------------------------------------------------------- rendering
    def render(self):
        trials = self.study.get_trials(deepcopy=False)
        counts: dict = {}
        for t in trials:
            state = t.user_attrs.get("state", t.state.name.lower())
            if t.state.name == "WAITING":
                state = "queued"
            counts[state] = counts.get(state, 0) + 1
        used = spent(trials)
        head = Text(self.title, style="bold")
        order = ["complete", "running", "pruned", "failed", "infeasible", "interrupted", "queued"]
        states = " · ".join(f"{counts.get(s, 0)} {s}" for s in order if counts.get(s) or s in
                            ("complete", "running", "pruned", "failed", "infeasible"))
        running = any(t.state.name == "RUNNING" for t in trials) or (
            self.live_trial is not None and self.live_trial.number is not None)
        # the budget is checked between trials: the last one may run on past it
        finishing = "budget spent · finishing the last trial" if running else "budget spent"
        if self.budget.seconds is not None:
            left = max(0.0, self.budget.seconds - used)
            money = (f"spent {used / 3600:.3f} of {self.budget.seconds / 3600:.3f} {self.unit}-h"
                     + (f" · left {left / 3600:.3f} · ETA ~{_duration(left)}" if left > 0 else
                        f" · {finishing}"))
        else:
            n = counted_trials(trials)
            done = [t.user_attrs.get("cost_s", 0) for t in trials if t.state.is_finished()]
            mean = sum(done) / len(done) if done else 0
            left_trials = max(0, self.budget.trials - n)
            money = f"{n} of {self.budget.trials} trials · spent {used / 3600:.3f} {self.unit}-h"
            if left_trials == 0:
                money += f" · {finishing}"
            elif mean:
                money += f" · ETA ~{_duration(left_trials * mean)}"
        parts = [head, Text(states), Text(money)]
        live = self.live_trial
        if live is not None and live.number is not None:
            acc = f" · val acc {live.accuracy:.3f}" if live.accuracy is not None else ""
            ep = f" · epoch {live.epoch}" if live.epoch else ""
            parts.append(Text(f"running: trial {live.number} {live.name} · {live.phase}{ep}{acc}"
                              f" · {time.time() - live.started:.0f} s", style="cyan"))
        if self.show_running:
            running = [t for t in trials if t.state.name == "RUNNING"]
            for t in running:
                a = t.user_attrs
                what = (f"epoch {a['epoch']}" if "epoch" in a else
                        "training" if "images_per_s" in a else "measuring")
                parts.append(Text(f"running: trial {t.number} {a.get('name', '')} · {what} · "
                                  f"pid {a.get('pid', '?')}@{a.get('host', '?')} · "
                                  f"{time.time() - a.get('started', time.time()):.0f} s",
                                  style="cyan"))
        front = _front(trials)
        if front:
            table = Table("#", "design", "accuracy", "images/s", title="current front",
                          title_justify="left", show_edge=False, pad_edge=False)
            for t in front[:8]:
                a = t.user_attrs
                table.add_row(str(t.number), a.get("name", ""), f"{a['accuracy']:.3f}",
                              f"{a['images_per_s']:,.0f}")
            parts.append(table)
        return Group(*parts)


def _front(trials):
    from .pruner import nondominated_fronts
    done = [t for t in trials if t.user_attrs.get("state") == "complete"
            and not t.user_attrs.get("duplicate_of") and "accuracy" in t.user_attrs]
    if not done:
        return []
    pts = [(t.user_attrs["accuracy"], t.user_attrs["images_per_s"]) for t in done]
    return sorted((done[i] for i in nondominated_fronts(pts)[0]),
                  key=lambda t: -t.user_attrs["images_per_s"])


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
