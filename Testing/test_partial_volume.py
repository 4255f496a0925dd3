"""The cord's outline from the MRI's partial volume (measure/partial_volume.py).

Analytic sections: an elliptic cord in CSF (or pressed between a mass and fat), rendered on
0.6 mm pixels with 10 x 10 sub-samples per pixel and Rician-free Gaussian noise; the labels
take the tissue at each pixel centre, as a segmentation does. The cord's refined share of
each pixel must give its true area and AP chord to a small fraction of a pixel, where the
labels alone are off by up to a pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import cli
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.measure.partial_volume import cord_fractions

PIXEL = 0.6
N = 48  # pixels per side
SLICES = 6
SUB = 10
# T2-like intensities and noise (the phantom's: 2 % of the brightest tissue)
CORD, CSF, MASS, FAT, MARROW = 450.0, 1000.0, 560.0, 800.0, 420.0
NOISE = 20.0


def _section(cx, cy, a, b, *, mass_front: float | None = None, marrow: bool = False):
    """Labels, image and the true cord mask (sub-sampled) of one axial section.

    The cord: ellipse of semi-axes a (left-right), b (antero-posterior) centred (cx, cy) mm
    from the grid's centre; CSF around it to 6 x 5 mm. ``mass_front``: a mass fills
    y < mass_front and fat y > the cord's back (the cord pressed between them, no CSF in
    front or behind). ``marrow``: marrow instead of the mass (close to the cord in T2).
    """
    step = PIXEL / SUB
    c = (np.arange(N * SUB) + 0.5) * step - N * PIXEL / 2
    x, y = np.meshgrid(c, c)  # rows = y (antero-posterior), columns = x
    cord = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
    tissue = np.full(x.shape, FAT)
    labels = np.zeros(x.shape, np.uint8)
    sac = (x / 6.0) ** 2 + (y / 5.0) ** 2 <= 1.0
    tissue[sac], labels[sac] = CSF, 2
    if mass_front is not None:
        # the mass fills everything in front of the cord across its width (it indents it)
        front = (y < mass_front) | ((np.abs(x - cx) < a) & (y < cy) & ~cord)
        tissue[front], labels[front] = (MARROW, 4) if marrow else (MASS, 3)
        back = (y > cy) & ~cord & (np.abs(x - cx) < a)
        tissue[back], labels[back] = FAT, 0
    tissue[cord], labels[cord] = CORD, 1
    # pixel means of the sub-samples; labels at the pixel centres
    mean = tissue.reshape(N, SUB, N, SUB).mean(axis=(1, 3))
    centre = labels[SUB // 2 :: SUB, SUB // 2 :: SUB]
    return centre, mean, cord


def _volume(arr2d, slices=SLICES, dtype=np.float32):
    img = sitk.GetImageFromArray(np.repeat(arr2d[None], slices, axis=0).astype(dtype))
    img.SetSpacing((PIXEL, PIXEL, 3.0))
    return img


def _measure(labels2d, image2d, true_cord, rng, cx):
    labels = _volume(labels2d, dtype=np.uint8)
    noisy = image2d[None] + rng.normal(0.0, NOISE, (SLICES, N, N))
    image = sitk.GetImageFromArray(noisy.astype(np.float32))
    image.CopyInformation(labels)
    fr = cord_fractions(labels, image)
    share = sitk.GetArrayFromImage(fr.cord)
    # AP chord of the column through the cord's centre: fractions summed down the column
    # (mean of the slices, each with its own noise, as the measures average a 4 mm slab),
    # against the true mean chord over that column's width
    col = int(np.argmin(np.abs((np.arange(N) + 0.5) * PIXEL - N * PIXEL / 2 - cx)))
    true_chord = true_cord[:, col * SUB : (col + 1) * SUB].sum(axis=0).mean() * PIXEL / SUB
    return {
        "area": share.sum(axis=(1, 2)).mean() * PIXEL**2,
        "true_area": true_cord.sum() * (PIXEL / SUB) ** 2,
        "chord": share[:, :, col].sum(axis=1).mean() * PIXEL,
        "chord_labels": (labels2d[:, col] == 1).sum() * PIXEL,
        "true_chord": true_chord,
        "refined": fr.refined,
    }


def test_a_cord_in_csf_has_its_true_area_and_chord():
    rng = np.random.default_rng(1)
    chord_err, label_err = [], []
    for _ in range(8):
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        a, b = rng.uniform(3.5, 4.5), rng.uniform(1.1, 1.6)  # a flattened cord, 2.2-3.2 mm AP
        r = _measure(*_section(cx, cy, a, b), rng, cx)
        assert r["refined"].get(2, 0) > 0
        assert abs(r["area"] - r["true_area"]) <= 0.02 * r["true_area"], r
        chord_err.append(r["chord"] - r["true_chord"])
        label_err.append(r["chord_labels"] - r["true_chord"])
    # noise alone: 2 pixels each side of 0.6 mm x 20 / 550, over 6 slices: 0.018 mm (1 sd)
    assert max(map(abs, chord_err)) <= 0.06, chord_err  # a tenth of a pixel
    assert max(map(abs, label_err)) >= 0.2, label_err  # the labels alone: whole pixels


def test_cord_and_csf_shares_add_up_to_the_sac():
    rng = np.random.default_rng(2)
    labels2d, image2d, _ = _section(0.17, -0.21, 4.0, 1.3)
    labels = _volume(labels2d, dtype=np.uint8)
    noisy = sitk.GetImageFromArray(
        (image2d[None] + rng.normal(0.0, NOISE, (SLICES, N, N))).astype(np.float32)
    )
    noisy.CopyInformation(labels)
    fr = cord_fractions(labels, noisy)
    total = sitk.GetArrayFromImage(fr.cord) + sitk.GetArrayFromImage(fr.csf)
    sac = np.isin(sitk.GetArrayFromImage(labels), (1, 2))
    assert np.allclose(total[sac], 1.0, atol=1e-6)
    assert np.all(total[~sac] <= 1.0 + 1e-6)
    assert fr.refined[2] > 0
    cord = sitk.GetArrayFromImage(fr.cord)
    assert np.any((cord[sac] > 0.05) & (cord[sac] < 0.95))  # edges moved inside the sac


def test_a_cord_pressed_between_a_mass_and_fat_has_its_true_chord():
    """No CSF in front (mass, 5.5 noise sigmas from the cord) nor behind (fat)."""
    rng = np.random.default_rng(3)
    errors = []
    for _ in range(8):
        cx, cy = rng.uniform(-0.3, 0.3, 2)
        b = rng.uniform(1.1, 1.5)
        r = _measure(*_section(cx, cy, 4.0, b, mass_front=cy - b), rng, cx)
        assert r["refined"].get(3, 0) > 0 and r["refined"].get(0, 0) > 0, r["refined"]
        errors.append(r["chord"] - r["true_chord"])
    assert max(map(abs, errors)) <= 0.15, errors  # a quarter of a pixel


def test_an_edge_against_a_tissue_of_the_cord_s_intensity_keeps_its_labels():
    """Marrow (420) against the cord (450): 1.5 noise sigmas, not refined."""
    rng = np.random.default_rng(4)
    labels2d, image2d, true_cord = _section(0.1, 0.2, 4.0, 1.3, mass_front=0.2 - 1.3, marrow=True)
    r = _measure(labels2d, image2d, true_cord, rng, 0.1)
    assert r["refined"].get(4, 0) == 0
    assert r["refined"].get(0, 0) > 0  # the fat behind is refined


def test_an_mri_on_another_grid_is_refused(tmp_path, capsys):
    labels2d, image2d, _ = _section(0.0, 0.0, 4.0, 1.3)
    labels = _volume(labels2d, dtype=np.uint8)
    image = _volume(image2d)
    image.SetOrigin((0.3, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the labelmap's grid"):
        cord_fractions(labels, image)
    # the command line: one line naming the MRI, exit 2, nothing written
    lab_path, mri_path = tmp_path / "labels.nii.gz", tmp_path / "t2.nii.gz"
    sitk.WriteImage(labels, str(lab_path))
    sitk.WriteImage(image, str(mri_path))
    out = tmp_path / "out"
    code = cli.main(
        ["metrics", "--labels", str(lab_path), "--mri", str(mri_path), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(mri_path) in err[0]
    assert "not on the labelmap's grid" in err[0]
    assert not out.exists()
