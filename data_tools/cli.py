"""Command-line subcommands for datasets: ``crawl``, ``clean`` and ``split`` (also under ``bagnet-keras``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from bagnet_keras.core.validation import check_int, check_number

CRAWL_EPILOG = """example:
  bagnet-keras crawl datasets/streets --labels Paris Rome Tokyo -n 400 \\
      --query "{label} street photo -art -fashion -food" --filter type=photo
  bagnet-keras crawl datasets/streets --classes cities.yaml -n 400   # the same again resumes or tops up
  bagnet-keras crawl datasets/mine --engine urls --classes urls.yaml -n 100

cities.yaml maps each label to its queries ({label} is replaced by the label):
  Paris: "{label} street photo -art -fashion -food"
  Tokyo: ["Tokyo street photo", "Shibuya street"]
urls.yaml maps each label to URLs or to a text file of them, one per line.

Files land in datasets/streets/<label>/000001.jpg upwards, each with a line in
datasets/streets/manifest.jsonl (query, engine, URL, sha256, size, time); URLs
that gave no file are listed with the reason in datasets/streets/crawl_log.jsonl.
--engine flickr reads its API key from the environment variable FLICKR_APIKEY.
"""

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


def integer(option: str, *, low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=``: the option's text as an int in ``[low, high]``, else an error naming option and value.

    argparse turns the error into one usage line and exit status 2; a zero is a zero, never "the
    default" (an option's default is its ``default=``, None where the library picks one).

    Parameters
    ----------
    option : str
        The option as the user writes it (``"--batch-size"``).
    low, high : int, optional
        Inclusive bounds (`bagnet_keras.core.validation.check_int`).

    Examples
    --------
    >>> integer("--batch-size", low=1)("8")
    8
    >>> integer("--batch-size", low=1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: `--batch-size` must be an integer >= 1. Received: --batch-size=0
    """
    return _checked(int, lambda value: check_int(value, option, low=low, high=high))


def number(
    option: str, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], float]:
    """An argparse ``type=``: the option's text as a finite float in the interval, else an error naming both.

    Parameters
    ----------
    option : str
        The option as the user writes it (``"--timeout"``).
    low, high : float, optional
        The bounds (`bagnet_keras.core.validation.check_number`).
    low_open : bool
        Exclude ``low`` itself (a time must be > 0).

    Examples
    --------
    >>> number("--timeout", low=0, low_open=True)("2.5")
    2.5
    >>> number("--timeout", low=0, low_open=True)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: `--timeout` must be a finite number > 0. Received: --timeout=0.0
    """
    return _checked(float, lambda value: check_number(value, option, low=low, high=high, low_open=low_open))


def _checked(convert: Callable[[str], object], check: Callable[[object], object]) -> Callable[[str], object]:
    """An argparse ``type=``: ``check(convert(text))``, or the text itself checked when it does not convert.

    The check's ValueError (it names the option and the value) becomes argparse's one usage line.
    """

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = text  # named in the error as the user typed it
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _seconds(option: str) -> Callable[[str], float]:
    return number(option, low=0, low_open=True)


# The upper bound is the hash's (data_tools.dedupe.check_threshold names it).
_THRESHOLD = integer("--threshold", low=0)


def _filters(pairs: list[str]) -> dict[str, str] | None:
    filters = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--filter {pair!r} is not KEY=VALUE, for example --filter type=photo")
        filters[key] = value
    return filters or None


def _crawl(args: argparse.Namespace) -> int:
    from data_tools.crawl import crawl

    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = crawl(
        args.root,
        args.classes or args.labels,
        n_per_class=args.per_class,
        engine=args.engine,
        queries=args.query or ["{label}"],
        filters=_filters(args.filter),
        min_size=args.min_size,
        threads=args.threads,
        timeout=args.timeout,
        deadline=args.deadline,
        endpoint=args.endpoint,
        progress=not args.quiet,
    )
    for label, count in report.counts.items():
        short = f" ({report.short[label]} short: the queries ran out of results)" if label in report.short else ""
        print(f"{label}: {count} images{short}")
    failures = ", ".join(f"{k}: {v}" for k, v in report.failures.most_common()) or "none"
    print(f"downloaded {report.downloaded} new images; URLs without a usable image: {failures}")
    return 0


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


def _crawl_parser(sub) -> None:
    p = sub.add_parser(
        "crawl",
        help="download images per class from image search",
        epilog=CRAWL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="dataset folder; one sub-folder per class is created")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--classes", help="YAML or JSON file: label -> queries (or URLs for --engine urls)")
    source.add_argument("--labels", nargs="+", help="class labels, searched with --query")
    p.add_argument(
        "-n", "--per-class", type=integer("--per-class", low=1), required=True, help="images wanted per class"
    )
    p.add_argument("--engine", default="bing", choices=["bing", "baidu", "google", "flickr", "urls"])
    p.add_argument("--query", action="append", help="query template, repeatable (default: '{label}')")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="search filter, repeatable")
    p.add_argument(
        "--min-size", type=integer("--min-size", low=1), default=64, help="skip images whose shorter side is smaller"
    )
    p.add_argument("--threads", type=integer("--threads", low=1), default=4, help="download threads")
    p.add_argument("--timeout", type=_seconds("--timeout"), default=10.0, help="seconds to connect and per read")
    p.add_argument("--deadline", type=_seconds("--deadline"), default=60.0, help="seconds a whole file may take")
    p.add_argument("--endpoint", help="send the engine's searches to this scheme://host instead (mirror, proxy)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="log every request problem to stderr")
    p.set_defaults(func=_crawl)


def _clean_parser(sub) -> None:
    p = sub.add_parser(
        "clean",
        help="clean a dataset folder in place",
        epilog=CLEAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="dataset folder with one sub-folder per class")
    p.add_argument(
        "--min-size", type=integer("--min-size", low=1), default=64, help="reject images whose shorter side is smaller"
    )
    p.add_argument(
        "--max-aspect",
        type=number("--max-aspect", low=1),
        default=3.0,
        help="reject longer/shorter side ratios above this",
    )
    p.add_argument("--threshold", type=_THRESHOLD, default=8, help="hash bits within which images are near-duplicates")
    p.add_argument("--keep-borders", action="store_true", help="do not crop uniform margins")
    p.add_argument("--workers", type=integer("--workers", low=1), default=None, help="threads (default: CPUs)")
    p.set_defaults(func=_clean)


def _split_parser(sub) -> None:
    p = sub.add_parser(
        "split",
        help="stratified train/val/test split",
        epilog=SPLIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="a cleaned dataset folder")
    p.add_argument(
        "--ratios",
        type=number("--ratios", low=0, high=1),
        nargs=3,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
    )
    p.add_argument("--seed", type=integer("--seed", low=0), default=0)
    p.add_argument("--threshold", type=_THRESHOLD, default=8, help="hash bits within which images stay in one split")
    p.add_argument("--copy-to", help="also copy the files to COPY_TO/<split>/<class>/")
    p.set_defaults(func=_split)


def add_commands(sub) -> None:
    """Register the dataset subcommands (crawl, clean, split) on an argparse subparsers object.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="python -m data_tools")
    >>> add_commands(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["clean", "datasets/streets", "--threshold", "6"]).threshold
    6
    """
    for add in (_crawl_parser, _clean_parser, _split_parser):
        add(sub)


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
    parser = argparse.ArgumentParser(prog="python -m data_tools", description="Crawl, clean and split datasets.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return run(parser, argv)
