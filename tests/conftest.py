import json
import os
import signal
import sys
from pathlib import Path

import pytest

# The search tests stop searches with SIGINT, as Ctrl-C does. A test session started in the
# background by a script (`pytest &`) inherits SIGINT ignored, and so would every search it
# starts (an ignored signal stays ignored across exec): take it back for this process, so
# its children start with SIGINT at its default and Python's Ctrl-C handler installed.
signal.signal(signal.SIGINT, signal.default_int_handler)

sys.path.insert(0, str(Path(__file__).parent))   # reference.py, zoo_references.py
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))   # tiny_swin.py

ERRORS: list[dict] = []


@pytest.fixture
def record_error():
    """Record a measured max error; written to $ATTNDSL_ERROR_REPORT (JSON) at the end."""
    def record(**row):
        ERRORS.append(row)
    return record


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("ATTNDSL_ERROR_REPORT")
    if out and ERRORS:
        Path(out).write_text(json.dumps(ERRORS, indent=1))
