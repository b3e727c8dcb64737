import csv

import pytest
from compare_case import motif_dataset, saved_models

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


def test_predict_names_an_unreadable_image(tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    with pytest.raises(SystemExit, match="not_an_image.jpg"):
        main(["predict", "--image", str(bad)])


def test_predict_reports_a_bad_weights_argument_without_traceback(capsys):
    assert main(["predict", "--weights", "no/such/checkpoint.pth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bagnet-keras: ") and "no/such/checkpoint.pth" in err and "Traceback" not in err


def test_explain_and_compare_commands_write_reports(tmp_path, capsys):
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
    assert main(["compare", "--model", "cnn", "--data", str(tmp_path / "data")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_tensorflow_start_up_lines_only_with_verbose():
    import subprocess
    import sys

    def stderr(*args):
        # `explain` starts TensorFlow first, then names what is missing (no image to explain): no model is built.
        code = "import sys; from bagnet_keras.app.cli import main; sys.exit(main(['explain', *sys.argv[1:]]))"
        done = subprocess.run(
            [sys.executable, "-c", code, "--model", "bagnet33", *args], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2 and "Give either --images" in done.stderr, done.stderr
        return done.stderr

    quiet = stderr()
    assert "oneDNN" not in quiet and "I0000" not in quiet
    assert "I0000" in stderr("--verbose")
