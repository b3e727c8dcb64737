"""Command-line subcommands for datasets: ``clean`` and ``split`` (also under ``bagnet-keras``)."""

from __future__ import annotations

import argparse
import sys

CLEAN_EPILOG = """example:
  bagnet-keras clean datasets/streets                  # decode, convert, crop margins, drop near-duplicates
  bagnet-keras clean datasets/streets --min-size 128 --threshold 6

Files that cannot be used and near-duplicates are moved to
datasets/streets/_quarantine/ with the reason in datasets/streets/manifest.jsonl.
"""

SPLIT_EPILOG = """example:
  bagnet-keras split datasets/streets --ratios 0.8 0.1 0.1 --seed 0
  bagnet-keras split datasets/streets --copy-to datasets/streets_split   # also train/val/test class folders
"""


def _clean(args: argparse.Namespace) -> int:
    from data_tools.clean import clean

    report = clean(
        args.root,
        min_size=args.min_size,
        max_aspect=args.max_aspect,
        crop_borders=not args.keep_borders,
        threshold=args.threshold,
        workers=args.workers,
    )
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report.reasons.items())) or "none"
    print(
        f"kept {report.kept} images ({report.converted} converted), {report.duplicates} near-duplicates and "
        f"{report.rejected} unusable files quarantined (reasons: {reasons})"
    )
    return 0


def _split(args: argparse.Namespace) -> int:
    from data_tools.split import split

    summary = split(args.root, ratios=args.ratios, seed=args.seed, threshold=args.threshold, copy_to=args.copy_to)
    for name, counts in summary.items():
        print(f"{name:5s} {sum(counts.values()):6d}  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def add_commands(sub) -> None:
    """Register the dataset subcommands on an argparse subparsers object."""
    formatter = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("clean", help="clean a dataset folder in place", epilog=CLEAN_EPILOG, formatter_class=formatter)
    p.add_argument("root", help="dataset folder with one sub-folder per class")
    p.add_argument("--min-size", type=int, default=64, help="reject images whose shorter side is smaller")
    p.add_argument("--max-aspect", type=float, default=3.0, help="reject longer/shorter side ratios above this")
    p.add_argument("--threshold", type=int, default=8, help="hash bits within which images are near-duplicates")
    p.add_argument("--keep-borders", action="store_true", help="do not crop uniform margins")
    p.add_argument("--workers", type=int, default=None, help="threads (default: CPUs)")
    p.set_defaults(func=_clean)
    p = sub.add_parser("split", help="stratified train/val/test split", epilog=SPLIT_EPILOG, formatter_class=formatter)
    p.add_argument("root", help="a cleaned dataset folder")
    p.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=int, default=8, help="hash bits within which images stay in one split")
    p.add_argument("--copy-to", help="also copy the files to COPY_TO/<split>/<class>/")
    p.set_defaults(func=_split)


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand; errors become one line on stderr and exit status 2."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        # Bad arguments and failed downloads already say what to do; a traceback adds nothing.
        print(f"{parser.prog}: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_tools", description="Collect, clean and split datasets.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser, argv)
