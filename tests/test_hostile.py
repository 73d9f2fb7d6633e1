"""Malformed specs, arguments, inputs and files (tests/hostile_corpus.py) get a clear
attndsl error, fast — no torch traceback, no hang, no out-of-memory — and the valid edge
cases in the corpus keep working. The corpus runs in a child process with a time limit
per case, so a hang or a crash fails this test instead of the session."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECK = Path(__file__).parent / "hostile_check.py"
FAST = 5.0      # seconds a refusal may take (parsing, binding, the memory estimate)


def test_every_malformed_input_is_refused_clearly_and_fast():
    proc = subprocess.run([sys.executable, str(CHECK), "--timeout", "30"],
                          capture_output=True, text=True, timeout=1200)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("start")]
    assert proc.returncode == 0, f"died in case {started[-1]}:\n{proc.stderr[-3000:]}"
    assert len(rows) >= 100
    wrong = {r["case"]: (r["outcome"], r["message"][:200]) for r in rows
             if r["outcome"] != {"refuse": "clear", "accept": "accepted"}[r["expect"]]}
    assert not wrong, wrong
    slow = {r["case"]: r["seconds"] for r in rows if r["expect"] == "refuse"
            and r["seconds"] > FAST}
    assert not slow, slow
    # clear means useful: every refusal names something the user wrote or passed
    vague = [r["case"] for r in rows if r["outcome"] == "clear" and len(r["message"]) < 25]
    assert not vague, vague
