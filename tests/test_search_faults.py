"""Every case of the search's fault corpus (tests/search_fault_corpus.py) is handled: a
clear error or survival, no traceback, no finished trial lost, no process left running.
Each case runs real `attndsl search` processes on a tiny space (seconds of budget); the
PostgreSQL cases run on a throw-away server (tests/postgres_server.py), stopped and
started again for the outage."""
from __future__ import annotations

import pytest

from search_fault_corpus import CASES, Context, run_case

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    from postgres_server import start_server
    ctx = Context(tmp_path_factory.mktemp("faults"), server_factory=start_server)
    yield ctx
    if ctx._server is not None:
        ctx._server.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_is_handled(case, context):
    outcome = run_case(case, context)
    if outcome.note.startswith("SKIP:"):
        pytest.skip(outcome.note)
    assert outcome.ok(), (case.handled, outcome)
