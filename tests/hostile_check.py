"""Run the malformed-input corpus (tests/hostile_corpus.py) and classify each outcome:

    clear      an attndsl error (the message is printed)
    traceback  any other exception (a torch or Python error reached the user)
    hang       still running after the time limit
    accepted   no error at all

One JSON line per case, `start NAME` before it (a caller sees which case killed a dead
process). Run from any checkout: `python tests/hostile_check.py [--timeout S] [NAME...]`.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


class Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise Hang()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import attndsl
    from hostile_corpus import CASES
    signal.signal(signal.SIGALRM, _alarm)
    for name in args.names or list(CASES):
        expect, fn = CASES[name]
        print(f"start {name}", flush=True)
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            fn()
            outcome, message = "accepted", ""
        except Hang:
            outcome, message = "hang", f"> {args.timeout} s"
        except attndsl.AttndslError as exc:
            outcome, message = "clear", str(exc)
        except Exception as exc:   # noqa: BLE001 — classifying is the point
            outcome, message = "traceback", f"{type(exc).__name__}: {exc}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(json.dumps({"case": name, "expect": expect, "outcome": outcome,
                          "seconds": round(time.perf_counter() - t0, 3),
                          "message": message[:600]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
