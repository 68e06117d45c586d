"""Fixtures shared by the integration and browser tests: one local stack for the whole session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import start_stack, stop_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The running local stack's state: apiUrl, awsEndpoint, apiKey, tenantId, table, stateFile, log."""
    folder = tmp_path_factory.mktemp("stack")
    state_file, log_file = folder / "stack.json", folder / "stack.log"
    process = start_stack(state_file, log_file)
    state = json.loads(state_file.read_text())
    state.update(stateFile=str(state_file), log=str(log_file))
    yield state
    stop_stack(process)
