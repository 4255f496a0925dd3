"""Argument types shared by the sub-commands."""

from __future__ import annotations

import argparse

from ..measure.margins import DEFAULT_PRV_MM


def positive_float(text: str) -> float:
    """An argparse type: a number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number, zero or more (a margin)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more: {text!r}")
    return value


def add_prv_argument(parser) -> None:
    """``--prv-mm``: the cord PRV's margin (``mescc metrics``, ``analyze``, ``export``)."""
    parser.add_argument(
        "--prv-mm",
        type=non_negative_float,
        default=DEFAULT_PRV_MM,
        metavar="MM",
        help=f"margin of the cord's planning risk volume (default {DEFAULT_PRV_MM:g} mm)",
    )
