import csv

import pytest
from compare_case import motif_dataset, saved_models

from bagnet_keras.app import workflows
from bagnet_keras.app.cli import main


def test_predict_prints_prediction_and_evidence_grid(capsys):
    assert main(["predict"]) == 0
    out = capsys.readouterr().out
    assert "24x24 positions, patch 33px, stride 8px, offset 0px" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "positions" in line) + 1
    grid = lines[start : start + 24]
    assert all(len(row) == 48 for row in grid) and "@" in "".join(grid)
    logit = float(lines[1].rsplit("logit ", 1)[1])
    mean = float(out.split("its mean ")[1].split()[0])
    assert abs(logit - mean) <= 1e-3


def test_predict_names_an_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    assert main(["predict", "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not_an_image.jpg" in err and "Traceback" not in err


def test_predict_reports_a_bad_weights_argument_without_traceback(capsys):
    assert main(["predict", "--weights", "no/such/checkpoint.pth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bagnet-keras: ") and "no/such/checkpoint.pth" in err and "Traceback" not in err


@pytest.mark.backends
def test_explain_and_compare_commands_write_reports(tmp_path, capsys, monkeypatch):
    motif_dataset(tmp_path / "data")
    saved_models(tmp_path)

    argv = [
        "compare",
        "--model",
        f"bagnet={tmp_path / 'bagnet.keras'}",
        "--model",
        f"cnn={tmp_path / 'cnn.keras'}",
        "--data",
        str(tmp_path / "data"),
        "--image-size",
        "48",
        "--out",
        str(tmp_path / "compare"),
    ]
    assert main([*argv, "--methods", "gradcam", "bagnet:evidence", "cnn:saliency"]) == 0
    assert f"report: {tmp_path / 'compare' / 'report.html'}" in capsys.readouterr().out
    with open(tmp_path / "compare" / "comparison" / "rows.csv") as f:
        maps = {(row["model"], row["method"]) for row in csv.DictReader(f)}
    assert maps == {("bagnet", "gradcam"), ("bagnet", "evidence"), ("cnn", "gradcam"), ("cnn", "saliency")}
    assert main([*argv[:-2], "--methods", "vgg:gradcam", "--out", str(tmp_path / "none")]) == 2
    assert "names model 'vgg', which is not one of the models (bagnet, cnn)" in capsys.readouterr().err

    images = [str(tmp_path / "data" / "ring" / f"{i}.png") for i in range(2)]
    argv = [
        "explain",
        "--model",
        str(tmp_path / "bagnet.keras"),
        "--images",
        *images,
        "--image-size",
        "48",
        "--methods",
        "evidence",
        "occlusion",
        "--out",
        str(tmp_path / "explain"),
    ]
    assert main(argv) == 0
    assert "Explanations of" in (tmp_path / "explain" / "report.html").read_text()
    # a .keras file that expects another preprocessing than ImageNet's says so
    asked = []
    real = workflows.get_preprocessing
    monkeypatch.setattr(workflows, "get_preprocessing", lambda name: asked.append(name) or real(name))
    assert main([*argv[:-1], str(tmp_path / "explain-mobilenet"), "--preprocess", "mobilenetv2"]) == 0
    assert asked[-1] == "mobilenetv2"
    assert main(["compare", "--model", "cnn", "--data", str(tmp_path / "data")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_tensorflow_start_up_lines_only_with_verbose():
    import logging
    import subprocess
    import sys

    def stderr(*args):
        # `explain` starts TensorFlow first, then names what is missing (no image to explain): no model is built.
        # It prints the level of TensorFlow's Python logger, which warns of retracing, after the command.
        code = (
            "import sys; from bagnet_keras.app.cli import main; code = main(['explain', *sys.argv[1:]]); "
            "import tensorflow as tf; print(tf.get_logger().getEffectiveLevel()); sys.exit(code)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, "--model", "bagnet33", *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2 and "Give either --images" in done.stderr, done.stderr
        return done.stderr, int(done.stdout.split()[-1])

    # The command's own line alone, or TensorFlow's start-up lines before it (their wording varies by version).
    quiet, level = stderr()
    assert quiet.splitlines() == ["bagnet-keras: Give either --images (files) or --data (a dataset folder)."]
    assert level == logging.ERROR
    loud, level = stderr("--verbose")
    assert len(loud.splitlines()) > 1 and loud.splitlines()[-1] == quiet.splitlines()[0] and level < logging.ERROR


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["compare", "--model", "a=a.keras", "--data", "d", "--batch-size", "0"],
            "`--batch-size` must be an integer >= 1",
        ),
        (["explain", "--model", "bagnet33", "--image-size", "-3"], "Received: --image-size=-3"),
        (["atlas", "--model", "a=a.keras", "--data", "d", "--units", "two"], "Received: --units='two'"),
        (["compare", "--model", "a=a.keras", "--data", "d", "--sanity", "-1"], "`--sanity` must be an integer >= 0"),
        (["demo", "--epochs", "0"], "Received: --epochs=0"),
        (["crawl", "d", "--labels", "a", "-n", "2", "--timeout", "0"], "`--timeout` must be a finite number > 0"),
        (["split", "d", "--ratios", "0.8", "0.1", "1.5"], "Received: --ratios=1.5"),
    ],
)
def test_numeric_options_name_the_option_and_the_value(capsys, argv, message):
    # Zero is never "the default": a value out of range is a one-line usage error (exit status 2).
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_options_left_out_are_none_where_the_library_picks_the_default():
    from bagnet_keras.app.cli import build_parser

    parser = build_parser()
    for argv in (
        ["explain", "--model", "bagnet33", "--images", "a.jpg"],
        ["compare", "--model", "a=a.keras", "--data", "d"],
        ["atlas", "--model", "a=a.keras", "--data", "d"],
    ):
        args = parser.parse_args(argv)
        assert args.batch_size is None and args.shard is None and args.image_size == 224
    args = parser.parse_args(["compare", "--model", "a=a.keras", "--data", "d", "--batch-size", "8", "--shard", "1/2"])
    assert (args.batch_size, args.shard, args.target, args.jit_compile) == (8, (1, 2), "logit", False)
