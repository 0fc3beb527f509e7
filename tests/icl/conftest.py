"""ICLDist fixtures (the helpers live in icl_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from icl_helpers import write_tasks


@pytest.fixture(scope="session")
def user_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("icl-tasks"))
