"""Option parsers shared by the benchmarks."""

from __future__ import annotations

import argparse


def run_as_script(doc: str, add_arguments, run) -> None:
    """A bench module run as a script (python -m fastattention.bench.NAME): its options, added by
    add_arguments, with its docstring `doc` as the description, parsed and passed to run."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    run(parser.parse_args())


def int_list(text: str, minimum: int = 1) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; argparse.ArgumentTypeError unless every value is >= minimum."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or any(v < minimum for v in values):
        what = "positive integers" if minimum == 1 else f"integers >= {minimum}"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return values


def non_negative_int_list(text: str) -> list[int]:
    return int_list(text, minimum=0)
