"""Shared fixtures: the read-only real data beside the checkout, temporary output folders."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: the project's real test data (read-only); see its MANIFEST.md."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        raise RuntimeError(f"real test data not found at {SHARED_DATA}: the checkout must sit beside shared/")
    return SHARED_DATA
