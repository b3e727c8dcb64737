"""The ``bagnet-keras`` command: per command, one function that builds its sub-parser and one that runs it.

The options several model commands share (``--image-size``, ``--batch-size``,
``--shard``, ``--target``, ``--jit-compile``, ``--dtype-policy``, the dataset's
``--model``/``--data``/``--split``) are declared once, in parent parsers. Numbers
are checked as they are parsed (`data_tools.cli.integer`): a bad value is a
one-line usage error naming the option and the value, and an option left out is
None where the library picks the default. Nothing here imports TensorFlow
until a model command runs, so ``bagnet-keras crawl --help`` stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from importlib.metadata import version

import numpy as np

from bagnet_keras.explain.methods import method_names
from bagnet_keras.explain.registry import TARGETS, parse_method
from data_tools.cli import add_commands, integer, run

DEMO_EPILOG = """example:
  bagnet-keras demo                                   # offline: generated scenes, a small BagNet and CNN, the report
  bagnet-keras demo --out runs/demo --per-class 100   # smaller and faster
  bagnet-keras demo --data datasets/streets --weights imagenet   # crawled data; fine-tuned BagNet-33, DenseNet-121

It prints its progress and, at the end, the path of report.html.
"""

EXPLAIN_EPILOG = """example:
  bagnet-keras explain --model bagnet33 --weights imagenet --images street.jpg cafe.jpg --out runs/explain
  bagnet-keras explain --model runs/bagnet/best.keras --data datasets/streets --split test --image-size 224

Maps of each method for the model's top class, measured (deletion, insertion, ...), in OUT/report.html.
Results are committed batch by batch under OUT/comparison: the same command again resumes a killed run.
"""

COMPARE_EPILOG = """example:
  bagnet-keras compare --model cnn=runs/vgg16/best.keras --model bagnet=runs/bagnet33/best.keras \\
      --data datasets/streets --split test --image-size 224 --preprocess bagnet33 --output city
  bagnet-keras compare ... --methods gradcam bagnet:evidence cnn:saliency cnn:integrated_gradients

Every model's maps measured on every model, in OUT/report.html and OUT/comparison/*.csv. The split is
read --batch-size images at a time and each batch's rows are committed under OUT/comparison/parts as
they go: memory does not grow with the split, and the same command again resumes a killed run (other
arguments into the same OUT stop with an error).
"""

BATCH_HELP = "images per batch and model call (default: 16 on a CPU, 64 on a GPU)"

SHARD_HELP = (
    "measure shard I of N (from 0; the batches whose number is I modulo N), for N jobs sharing the "
    "data; 'env' or 'env/N' reads I from JOB_COMPLETION_INDEX (Kubernetes) or SLURM_ARRAY_TASK_ID"
)

MERGE_EPILOG = """example:
  for i in 0 1 2; do bagnet-keras compare ... --shard $i/3 --out runs/compare/shard-$i; done
  bagnet-keras merge runs/compare/all runs/compare/shard-0 runs/compare/shard-1 runs/compare/shard-2

The merged tables (OUT/comparison) and report equal those of one unsharded run. Shards of
`bagnet-keras atlas --shard I/N` merge the same way into OUT/atlas.html.
"""

ATLAS_EPILOG = """examples (the demo's trained models on its test scenes):
  bagnet-keras atlas --model cnn=runs/demo/models/cnn/best.keras --model bagnet=runs/demo/models/bagnet/best.keras \\
      --data runs/demo/data --image-size 64 --out runs/atlas
  bagnet-keras atlas --model cnn=runs/demo/models/cnn/best.keras --data runs/demo/data --image-size 64 \\
      --layers conv4_relu conv5_relu --units 8 --out runs/atlas-cnn

Writes OUT/atlas.html: each layer's strongest units (crops beside projections), NMF groups of the last
layer with their class attributions, and a BagNet's class concepts. With --layers, every model must have them.
Each pass over the data commits its batches under OUT/passes, so the same command again resumes a killed
run. Shared by N jobs: --shard I/N in each (OUT a folder per shard), then bagnet-keras merge OUT SHARD_OUTS...
"""

EXPLORE_EPILOG = """example (the demo's trained models on its test scenes):
  bagnet-keras explore --model cnn=runs/demo/models/cnn/best.keras --model bagnet=runs/demo/models/bagnet/best.keras \\
      --data runs/demo/data --image-size 64 --out runs/explore

Writes OUT/explorer.html beside OUT/atlas.html: click a position of an image to see the CNN's NMF groups
there (activation, attribution to each class, feature visualisation, strongest crops) and the BagNet
patch's exact class evidence and concept. Its passes are the atlas's: they resume after a kill, and
--shard I/N then bagnet-keras merge OUT SHARD_OUTS... work as for atlas.
"""

PREDICT_EPILOG = """example:
  bagnet-keras predict                       # BagNet-33, random weights, a generated image, offline
  bagnet-keras predict --weights imagenet    # the authors' ImageNet weights (downloads once)
  bagnet-keras predict --weights bagnet32-2ddd53ed.pth.tar --image street.jpg
"""


def sample_image(size: int = 224, seed: int = 0) -> np.ndarray:
    """A generated RGB image (uint8): coloured discs on a striped background.

    Examples
    --------
    >>> sample_image(64).shape
    (64, 64, 3)
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), dtype="float32")
    image[...] = 80 + 40 * np.sin(xx / 6.0)[..., None]
    for _ in range(6):
        cy, cx = rng.uniform(0, size, 2)
        radius = rng.uniform(size / 16, size / 6)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = rng.uniform(0, 255, 3)
    return image.clip(0, 255).astype("uint8")


def load_image(path: str, size: int = 224) -> np.ndarray:
    """Read an image file as RGB uint8 ``size`` x ``size``, by the package's one reader (`read_image`).

    Images over the pixel limit are refused before decoding, as everywhere else.

    Examples
    --------
    >>> load_image("photo.jpg").shape  # doctest: +SKIP
    (224, 224, 3)
    """
    from bagnet_keras.core.files import read_image

    return read_image(path, (size, size))


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras, with their native start-up log lines and Python warnings discarded unless
    ``verbose``.

    TensorFlow's libraries log (oneDNN, CUDA, CPU features) through absl while
    they load, before any log level applies, so only the stderr file descriptor
    itself can keep those lines out of a user's terminal or CI log; Python
    errors raised by the import still reach stderr.
    """
    saved = None
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        sys.stderr.flush()
        with contextlib.suppress(OSError):  # no stderr to protect
            saved = os.dup(2)
    try:
        if saved is not None:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA's probe logs at the first device query
        if not verbose:
            # Its Python logger warns when many functions are traced, which an explanation does by design:
            # one trace per model, target and input signature (`bagnet_keras.core.graph.traced`).
            tf.get_logger().setLevel("ERROR")
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)


def _weights(text: str) -> str | None:
    """The ``--weights`` option: the word ``none`` means no weights (random initialisation, offline)."""
    return None if text == "none" else text


def _models(items: list[str]) -> dict[str, str]:
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--model {item!r} is not NAME=PATH.keras, for example --model cnn=runs/cnn/best.keras")
        models[name] = path
    return models


def _done(path: str | None, args: argparse.Namespace) -> None:
    if path is None:
        print(
            f"shard {args.shard[0]}/{args.shard[1]} done in {os.path.abspath(args.out)}; when every shard is "
            f"done: bagnet-keras merge OUT SHARD_OUT_FOLDERS..."
        )
    else:
        page = os.path.basename(path).removesuffix(".html")
        print(f"{page if page in ('atlas', 'explorer') else 'report'}: {os.path.abspath(path)}")


def _shard(text: str):
    from bagnet_keras.app.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _method(text: str) -> str:
    try:
        parse_method(text.partition(":")[2] if ":" in text else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(method_names())}, "
            "or a CAM method at a layer: gradcam@LAYER)"
        ) from None
    return text


# The runners: each starts TensorFlow, then imports what it needs and calls the library.


def demo(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras demo`` (`bagnet_keras.app.demo.run_demo`)."""
    start_tensorflow(args.verbose)
    from bagnet_keras.app.demo import run_demo

    run_demo(
        args.out,
        data=args.data,
        weights=_weights(args.weights),
        per_class=args.per_class,
        image_size=args.image_size,
        epochs=args.epochs,
        seed=args.seed,
        # run_demo's own default when not given
        **({} if args.visualization_steps is None else {"visualization_steps": args.visualization_steps}),
    )
    return 0


def explain(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras explain`` (`bagnet_keras.app.workflows.explain_images`)."""
    start_tensorflow(args.verbose)
    from bagnet_keras.app.workflows import explain_images

    if bool(args.images) == bool(args.data):
        raise ValueError("Give either --images (files) or --data (a dataset folder).")
    path = explain_images(
        args.model,
        args.images or args.data,
        args.out,
        weights=_weights(args.weights),
        methods=args.methods,
        image_size=args.image_size,
        split=args.split,
        target=args.target,
        batch_size=args.batch_size,
        shard=args.shard,
        jit_compile=args.jit_compile,
        dtype_policy=args.dtype_policy,
        preprocess=args.preprocess,
    )
    _done(path, args)
    return 0


def compare(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras compare`` (`bagnet_keras.app.workflows.compare_models`)."""
    start_tensorflow(args.verbose)
    from bagnet_keras.app.workflows import compare_models

    path = compare_models(
        _models(args.model),
        args.data,
        args.out,
        split=args.split,
        image_size=args.image_size,
        preprocess=args.preprocess,
        masks=args.masks,
        methods=args.methods,
        output=args.output,
        max_images=args.max_images,
        target=args.target,
        batch_size=args.batch_size,
        shard=args.shard,
        jit_compile=args.jit_compile,
        dtype_policy=args.dtype_policy,
        sanity=args.sanity,
    )
    _done(path, args)
    return 0


#: Images per forward pass of ``bagnet-keras atlas`` when ``--batch-size`` is not given.
ATLAS_BATCH_SIZE = 32


def atlas(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras atlas`` or ``explore`` (`bagnet_keras.app.workflows.atlas_models`, `explore_models`)."""
    start_tensorflow(args.verbose)
    from bagnet_keras.app.workflows import atlas_models, explore_models

    run = explore_models if args.command == "explore" else atlas_models
    path = run(
        _models(args.model),
        args.data,
        args.out,
        split=args.split,
        image_size=args.image_size,
        preprocess=args.preprocess,
        layers=args.layers,
        units=args.units,
        k=args.k,
        groups=args.groups,
        max_images=args.max_images,
        batch_size=ATLAS_BATCH_SIZE if args.batch_size is None else args.batch_size,
        shard=args.shard,
    )
    _done(path, args)
    return 0


def merge(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras merge`` (`bagnet_keras.app.workflows.merge`)."""
    start_tensorflow(args.verbose)  # the workflows import Keras; an atlas merge loads the models
    from bagnet_keras.app.workflows import merge as merge_folders

    path = merge_folders(args.out, args.shards)
    _done(path, args)
    return 0


def predict(args: argparse.Namespace) -> int:
    """Run ``bagnet-keras predict``: BagNet-33's top class for one image, and its evidence map as text."""
    start_tensorflow(args.verbose)
    from bagnet_keras.models import BagNet33, bagnet_geometry, decode_predictions, evidence_model, preprocess_input

    image = load_image(args.image) if args.image else sample_image()
    weights = _weights(args.weights)
    model = BagNet33(weights=weights, classifier_activation=None)
    evidence = evidence_model(model).predict(preprocess_input(image[None]), verbose=0)[0]
    logits = evidence.mean(axis=(0, 1))
    top = int(np.argmax(logits))
    geometry = bagnet_geometry(model)
    ((wnid, name, score),) = decode_predictions(logits[None], top=1)[0]
    print(f"BagNet-33 ({'random weights' if weights is None else weights}), image {args.image or 'generated'}")
    print(f"top class: {top} {name} ({wnid}), logit {score:.4f}")
    print(
        f"evidence map for that class: {evidence.shape[0]}x{evidence.shape[1]} positions, "
        f"patch {geometry.patch_size}px, stride {geometry.stride}px, offset {geometry.offset}px; "
        f"its mean {evidence[..., top].mean():.4f} is the logit"
    )
    print_grid(evidence[..., top])
    return 0


def print_grid(grid: np.ndarray) -> None:
    """Print a 2-D map as text, two characters per value, its magnitude from ``' '`` (0) to ``'@'`` (the largest).

    Examples
    --------
    >>> print_grid(np.array([[0.0, -2.0], [1.0, 2.0]]))
      @@
    ==@@
    (|evidence| from ' ' = 0 to '@' = 2.0000)
    """
    scale = np.abs(grid).max() or 1.0
    shades = " .:-=+*#%@"
    for row in grid:
        print("".join(shades[int(round(abs(v) / scale * (len(shades) - 1)))] * 2 for v in row))
    print(f"(|evidence| from ' ' = 0 to '@' = {scale:.4f})")


# The parent parsers: options several commands share, declared once. Each call makes new argparse
# actions, so a command that changes one of its options' defaults changes no other command's.


def _tensorflow_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up log lines")
    return parent


def _batch_options(batch_help: str) -> argparse.ArgumentParser:
    """Every command that runs models over images: the images' side, the batch, the shard."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--image-size", type=integer("--image-size", low=1), default=224)
    parent.add_argument("--batch-size", type=integer("--batch-size", low=1), help=batch_help)
    parent.add_argument("--shard", type=_shard, metavar="I/N", help=SHARD_HELP)
    return parent


def _map_options() -> argparse.ArgumentParser:
    """Every command that computes maps: the score explained and how the forward passes run."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--target", choices=TARGETS, default="logit", help="the class score explained (default: logit)")
    parent.add_argument("--jit-compile", action="store_true", help="compile the models' forward passes with XLA")
    parent.add_argument(
        "--dtype-policy",
        choices=["mixed_float16", "mixed_bfloat16"],
        help="compute in mixed precision (mixed_float16 on GPUs); scores stay float32",
    )
    return parent


def _dataset_options() -> argparse.ArgumentParser:
    """Every command over saved models and a dataset split: which models, which images, read how."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--model", action="append", required=True, metavar="NAME=PATH", help="a .keras model, repeatable"
    )
    parent.add_argument("--data", required=True, help="a dataset folder (split by bagnet-keras split)")
    parent.add_argument("--split", default="test", choices=["train", "val", "test"])
    parent.add_argument(
        "--preprocess",
        default="bagnet33",
        help="backbone whose preprocessing the models expect; 'none': models that take pixels 0..255",
    )
    parent.add_argument(
        "--max-images", type=integer("--max-images", low=1), help="only the first N images of the split (default: all)"
    )
    return parent


def _add_methods(parser: argparse.ArgumentParser, per_model: str = "") -> None:
    parser.add_argument(
        "--methods",
        nargs="+",
        type=_method,
        metavar="METHOD",
        help=f"any of: {', '.join(method_names())}; a CAM method at a layer: gradcam@LAYER{per_model} "
        "(default: evidence and gradcam for BagNets, gradcam otherwise)",
    )


def _command(sub, name: str, help: str, epilog: str, parents=()) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_tensorflow_options(), *parents],
    )


# The sub-parsers, one per command.


def _demo_parser(sub) -> None:
    p = _command(sub, "demo", "the main job: BagNet evidence vs Grad-CAM, measured, as an HTML report", DEMO_EPILOG)
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--data", help="a dataset folder (one sub-folder per class) instead of generated scenes")
    p.add_argument(
        "--weights",
        default="none",
        choices=["none", "imagenet"],
        help="none: small models from scratch, offline; imagenet: fine-tune BagNet-33 and DenseNet-121",
    )
    p.add_argument("--per-class", type=integer("--per-class", low=1), default=400, help="generated scenes per class")
    p.add_argument("--image-size", type=integer("--image-size", low=1), default=64, help="side of the generated scenes")
    p.add_argument("--epochs", type=integer("--epochs", low=1), default=30)
    p.add_argument("--seed", type=integer("--seed", low=0), default=0)
    p.add_argument(
        "--visualization-steps",
        type=integer("--visualization-steps", low=1),
        help="optimisation steps of each feature visualisation (default: 256; fewer: a quicker look)",
    )
    p.set_defaults(func=demo)


def _explain_parser(sub) -> None:
    p = _command(
        sub,
        "explain",
        "maps of one model for images, measured, as an HTML report",
        EXPLAIN_EPILOG,
        [_batch_options(BATCH_HELP), _map_options()],
    )
    p.add_argument("--model", required=True, help="a .keras file or a backbone name (bagnet33, vgg16, ...)")
    p.add_argument("--weights", default="none", help="for a name: 'none', 'imagenet' or a weights file")
    p.add_argument("--images", nargs="+", help="image files")
    p.add_argument("--data", help="or a dataset folder")
    p.add_argument("--split", choices=["train", "val", "test"], help="with --data: one split of the manifest")
    p.add_argument(
        "--preprocess",
        help="backbone whose preprocessing the model expects (default: a name's own; ImageNet's for a .keras file)",
    )
    _add_methods(p)
    p.add_argument("--out", default="runs/explain")
    p.set_defaults(func=explain)


def _compare_parser(sub) -> None:
    p = _command(
        sub,
        "compare",
        "compare the explanations of several models, as an HTML report",
        COMPARE_EPILOG,
        [_dataset_options(), _batch_options(BATCH_HELP), _map_options()],
    )
    p.add_argument("--masks", help="folder of ground-truth masks <class>/<name>.png, if any")
    _add_methods(p, "; NAME:METHOD for the model NAME alone, e.g. bagnet:evidence cnn:saliency")
    p.add_argument("--output", help="the head to explain, for multi-output models")
    p.add_argument("--out", default="runs/compare")
    p.add_argument(
        "--sanity",
        type=integer("--sanity", low=0),
        default=0,
        metavar="N",
        help="run the sanity checks of every map (model randomisation, input invariance) on N images",
    )
    p.set_defaults(func=compare)


def _atlas_parser(sub, command: str = "atlas") -> None:
    about = {
        "atlas": ("what models learned across a dataset: units, groups, concepts, as HTML", ATLAS_EPILOG),
        "explore": ("point at a position: what a CNN and a BagNet see there, in one HTML page", EXPLORE_EPILOG),
    }
    p = _command(
        sub,
        command,
        *about[command],
        [_dataset_options(), _batch_options(f"images per forward pass (default: {ATLAS_BATCH_SIZE})")],
    )
    p.add_argument("--layers", nargs="+", help="layers with spatial outputs (default: each model's last one)")
    p.add_argument("--units", type=integer("--units", low=1), default=16, help="the strongest units shown per layer")
    p.add_argument("--k", type=integer("--k", low=1), default=9, help="top activations per unit")
    p.add_argument("--groups", type=integer("--groups", low=1), default=6, help="NMF groups of the last layer")
    p.add_argument("--out", default=f"runs/{command}")
    p.set_defaults(func=atlas)


def _explore_parser(sub) -> None:
    _atlas_parser(sub, "explore")


def _merge_parser(sub) -> None:
    p = _command(sub, "merge", "join the output folders of finished shards of compare, explain or atlas", MERGE_EPILOG)
    p.add_argument("out", help="output folder of the merged comparison and report")
    p.add_argument("shards", nargs="+", metavar="SHARD_OUT", help="the --out folder of every shard")
    p.set_defaults(func=merge)


def _predict_parser(sub) -> None:
    p = _command(sub, "predict", "BagNet-33 prediction and evidence grid for one image", PREDICT_EPILOG)
    p.add_argument("--weights", default="none", help="'none' (default, offline), 'imagenet', or a checkpoint path")
    p.add_argument("--image", help="an image file; default: a generated image")
    p.set_defaults(func=predict)


def build_parser() -> argparse.ArgumentParser:
    """The ``bagnet-keras`` parser: the model commands here, the dataset commands of `data_tools.cli`.

    Examples
    --------
    >>> args = build_parser().parse_args(["atlas", "--model", "cnn=cnn.keras", "--data", "d", "--units", "4"])
    >>> args.command, args.units, args.batch_size, args.image_size
    ('atlas', 4, None, 224)
    """
    parser = argparse.ArgumentParser(prog="bagnet-keras", description="BagNets in Keras: see what a CNN looks at.")
    # the installed distribution's version, which the build read from bagnet_keras.__version__
    parser.add_argument("--version", action="version", version=f"bagnet-keras {version('bagnet-keras')}")
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = (_demo_parser, _explain_parser, _compare_parser, _atlas_parser, _explore_parser, _merge_parser)
    for add in (*parsers, _predict_parser):
        add(sub)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``bagnet-keras`` command; the exit status (2 for a bad argument, said in one line on stderr).

    Examples
    --------
    >>> main(["predict"])  # doctest: +SKIP
    0
    """
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
