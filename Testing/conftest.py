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
        raise RuntimeError(
            f"real test data not found at {SHARED_DATA}: the checkout must sit beside shared/"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def phantom_study():
    """Factory ``phantom_study(grade, seed)`` returning a cached in-memory phantom study.

    Phantoms take a few seconds each; the cache lets every test module share them.
    """
    from MESCCAnalyzerLib.phantom import make_phantom

    cache = {}

    def get(grade: str = "2", seed: int = 0):
        key = (str(grade), int(seed))
        if key not in cache:
            cache[key] = make_phantom(*key)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def phantom_channels(phantom_study):
    """Factory ``phantom_channels(grade, seed)``: the T2, the PET (SUV) resampled onto the T2
    grid through the true transform, and the truth labels, as the segmentation sees them."""
    import SimpleITK as sitk

    def get(grade: str = "2", seed: int = 0):
        study = phantom_study(grade, seed)
        pet = sitk.Resample(
            study.pet_suv, study.t2, study.mri_to_ct, sitk.sitkLinear, 0.0, sitk.sitkFloat32
        )
        return study.t2, pet, study.labels

    return get


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """Factory ``phantom_dir(grade, seed)``: a phantom written to disk (cached per session)."""
    from MESCCAnalyzerLib.phantom import write_phantom

    cache = {}

    def get(grade: str = "2", seed: int = 0):
        key = (str(grade), int(seed))
        if key not in cache:
            cache[key] = write_phantom(
                tmp_path_factory.mktemp(f"phantom_{key[0]}_{key[1]}") / "study", *key
            )
        return cache[key]

    return get
