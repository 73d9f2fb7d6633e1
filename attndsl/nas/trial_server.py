"""Imported by the trial fork server only (trial.PRELOAD), never elsewhere.

multiprocessing prepares every forked child as it prepares a spawned one: it runs the
parent's main script again (as `__mp_main__`) so that a target defined there can be found.
A trial's target is `attndsl.nas.trial.forked_main`, never the user's script — and running
a script written without `if __name__ == "__main__":` again (a notebook cell saved as a
file, the README's example) would start its search a second time inside the trial. So in
this server, and in every trial forked from it, the main module is left alone.
"""
from multiprocessing import spawn


def _leave_main_alone(_main: str) -> None:
    return None


spawn._fixup_main_from_path = _leave_main_alone
spawn._fixup_main_from_name = _leave_main_alone
