"""Slicer point lists (.mrk.json): LPS/RAS, labels and descriptions, landmark pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io.markups import (
    read_landmark_pairs,
    read_markups,
    read_markups_points,
    write_markups_points,
)

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"


def write(path, markups):
    path.write_text(json.dumps({"@schema": SCHEMA, "markups": markups}))
    return path


def a_point(label, position, description="", status="defined"):
    return {
        "id": label,
        "label": label,
        "description": description,
        "position": position,
        "positionStatus": status,
    }


def test_a_ras_file_is_returned_in_lps(tmp_path):
    path = write(
        tmp_path / "p.mrk.json",
        [
            {
                "type": "Fiducial",
                "coordinateSystem": "RAS",
                "controlPoints": [a_point("F-1", [10.0, -20.0, 30.0])],
            }
        ],
    )
    [(text, xyz)] = read_markups_points(path)
    assert text == "F-1"
    np.testing.assert_array_equal(xyz, [-10.0, 20.0, 30.0])  # exact: a sign flip


def test_an_lps_file_and_a_file_without_coordinate_system_are_read_as_is(tmp_path):
    lps = write(
        tmp_path / "a.mrk.json",
        [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "controlPoints": [a_point("a", [1.5, 2.5, 3.5])],
            }
        ],
    )
    default = write(
        tmp_path / "b.mrk.json",
        [{"type": "Fiducial", "controlPoints": [a_point("b", [1.5, 2.5, 3.5])]}],
    )
    # Slicer's reader assumes LPS when coordinateSystem is absent.
    assert read_markups_points(lps)[0][1].tolist() == [1.5, 2.5, 3.5]
    assert read_markups_points(default)[0][1].tolist() == [1.5, 2.5, 3.5]


def test_the_description_is_returned_when_the_point_has_one(tmp_path):
    path = write(
        tmp_path / "seeds.mrk.json",
        [
            {
                "type": "Fiducial",
                "controlPoints": [
                    a_point("F-1", [0, 0, 0], "spinal_cord"),
                    a_point("F-2", [1, 1, 1]),
                ],
            }
        ],
    )
    assert [t for t, _ in read_markups_points(path)] == ["spinal_cord", "F-2"]
    points = read_markups(path)[0].points
    assert (points[0].label, points[0].description) == ("F-1", "spinal_cord")


def test_undefined_points_are_left_out(tmp_path):
    path = write(
        tmp_path / "p.mrk.json",
        [
            {
                "type": "Fiducial",
                "controlPoints": [
                    a_point("a", [0, 0, 0]),
                    a_point("b", [0, 0, 0], status="undefined"),
                    a_point("c", [1, 2, 3], status="preview"),
                ],
            }
        ],
    )
    assert [t for t, _ in read_markups_points(path)] == ["a", "c"]


def test_points_written_in_ras_are_read_back_in_lps(tmp_path):
    pts = [("T8", np.array([12.25, -3.5, 100.0])), ("T9", np.array([-1.0, 2.0, -3.0]))]
    path = write_markups_points(
        tmp_path / "w.mrk.json", pts, coordinate_system="RAS", descriptions=True
    )
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["markups"][0]["coordinateSystem"] == "RAS"
    assert data["markups"][0]["controlPoints"][0]["position"] == [-12.25, 3.5, 100.0]
    back = read_markups_points(path)
    assert [t for t, _ in back] == ["T8", "T9"]
    np.testing.assert_array_equal(np.array([x for _, x in back]), np.array([p for _, p in pts]))


def test_slicer_reads_our_file_at_the_same_positions(tmp_path):
    """Slicer's own JSON storage node (slicer-core) reads what we write, same points in RAS."""
    pts = [("a", np.array([10.0, 20.0, 30.0])), ("b", np.array([-5.0, 0.5, 7.0]))]
    path = write_markups_points(tmp_path / "s.mrk.json", pts)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
    storage = slicer.vtkMRMLMarkupsJsonStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    assert node.GetNumberOfControlPoints() == 2
    ras = [0.0, 0.0, 0.0]
    node.GetNthControlPointPosition(0, ras)
    assert ras == pytest.approx([-10.0, -20.0, 30.0])  # LPS (10, 20, 30) is RAS (-10, -20, 30)
    assert node.GetNthControlPointLabel(1) == "b"


def test_two_point_lists_give_landmark_pairs_in_order(tmp_path):
    fixed = [
        ("1", np.array([0.0, 0.0, 0.0])),
        ("2", np.array([10.0, 0.0, 0.0])),
        ("3", np.array([0.0, 10.0, 0.0])),
    ]
    moving = [(n, p + [100.0, 0.0, 0.0]) for n, p in fixed]
    path = write_markups_points(
        tmp_path / "lm.mrk.json",
        [fixed, moving],
        names=["fixed", "moving"],
        coordinate_system="RAS",
    )
    f, m = read_landmark_pairs(path)
    np.testing.assert_allclose(m - f, [[100.0, 0.0, 0.0]] * 3)
    # the lists named the other way round are swapped back
    path2 = write_markups_points(
        tmp_path / "lm2.mrk.json", [moving, fixed], names=["moving", "fixed"]
    )
    f2, m2 = read_landmark_pairs(path2)
    np.testing.assert_allclose(m2 - f2, [[100.0, 0.0, 0.0]] * 3)


def test_one_list_with_f_and_m_labels_is_paired_by_name(tmp_path):
    pts = [
        ("F-1", [0, 0, 0]),
        ("M-2", [110, 0, 0]),
        ("F-2", [10, 0, 0]),
        ("M-1", [100, 0, 0]),
        ("fixed T8", [0, 10, 0]),
        ("moving T8", [100, 10, 0]),
    ]
    path = write_markups_points(
        tmp_path / "one.mrk.json", [(t, np.array(p, float)) for t, p in pts]
    )
    f, m = read_landmark_pairs(path)
    assert len(f) == 3
    np.testing.assert_allclose(m - f, [[100.0, 0.0, 0.0]] * 3)


def test_landmark_problems_are_clear_input_errors(tmp_path):
    too_few = write_markups_points(
        tmp_path / "few.mrk.json", [[("1", np.zeros(3))], [("1", np.ones(3))]]
    )
    with pytest.raises(InputError, match="at least 3"):
        read_landmark_pairs(too_few)
    line = [(str(i), np.array([float(i), 0.0, 0.0])) for i in range(4)]
    collinear = write_markups_points(tmp_path / "line.mrk.json", [line, line])
    with pytest.raises(InputError, match="one line"):
        read_landmark_pairs(collinear)
    unknown = write_markups_points(tmp_path / "u.mrk.json", [("apple", np.zeros(3))] * 3)
    with pytest.raises(InputError, match="fixed or the moving"):
        read_landmark_pairs(unknown)


def test_bad_files_name_the_file(tmp_path):
    not_json = tmp_path / "x.mrk.json"
    not_json.write_text("{not json")
    with pytest.raises(InputError, match="not a JSON file") as info:
        read_markups_points(not_json)
    assert str(not_json) in str(info.value)
    no_markups = tmp_path / "y.mrk.json"
    no_markups.write_text("{}")
    with pytest.raises(InputError, match="no 'markups'"):
        read_markups_points(no_markups)
    bad_system = write(
        tmp_path / "z.mrk.json",
        [{"type": "Fiducial", "coordinateSystem": "XYZ", "controlPoints": []}],
    )
    with pytest.raises(InputError, match="coordinateSystem"):
        read_markups_points(bad_system)
    bad_position = write(
        tmp_path / "w.mrk.json", [{"type": "Fiducial", "controlPoints": [a_point("a", [1, 2])]}]
    )
    with pytest.raises(InputError, match="valid 3D position"):
        read_markups_points(bad_position)
    with pytest.raises(InputError, match="not found"):
        read_markups_points(tmp_path / "missing.mrk.json")
