"""The options that name the vertebral levels, shared by ``mescc metrics`` and ``mescc analyze``."""

from __future__ import annotations


def add_level_arguments(parser) -> None:
    """``--vertebrae LABELMAP`` or ``--level-anchor NAME@X,Y,Z`` (one of them, or neither)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--vertebrae",
        metavar="LABELMAP",
        help="vertebra labelmap in the VerSe numbering (1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, "
        "26 sacrum) on the MRI's grid: names every section, lesion and level",
    )
    group.add_argument(
        "--level-anchor",
        metavar="NAME@X,Y,Z",
        help="one vertebral body named by a point inside it (LPS mm), e.g. T6@12.5,-30,104; "
        "the other bodies are counted along the cord from the bone label. Without this or "
        "--vertebrae, levels are numbered from the top of the image (unnamed)",
    )
