import pytest

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
    import keras
    from PIL import Image

    from bagnet_keras import BagNet
    from bagnet_keras.transfer.heads import build_classifier
    from data_tools.clean import clean
    from data_tools.split import split
    from data_tools.synthetic import motif_scene

    classes = ["cross", "ring", "triangle"]
    for k, label in enumerate(classes):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(8):
            image = motif_scene(label, seed=10 * k + i, size=48)[0]
            Image.fromarray(image).save(tmp_path / "data" / label / f"{i}.png")
    clean(str(tmp_path / "data"), min_size=32, progress=False)
    split(str(tmp_path / "data"), ratios=(0.5, 0.25, 0.25))
    keras.utils.set_random_seed(0)
    bagnet = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=4, include_top=False, input_shape=(48, 48, 3))
    cnn = keras.Sequential([keras.Input((48, 48, 3)), keras.layers.Conv2D(4, 3, activation="relu")])
    for name, backbone in (("bagnet", bagnet), ("cnn", cnn)):
        build_classifier(backbone, 3, mode="scratch").save(tmp_path / f"{name}.keras")

    argv = ["compare", "--model", f"bagnet={tmp_path / 'bagnet.keras'}", "--model", f"cnn={tmp_path / 'cnn.keras'}",
            "--data", str(tmp_path / "data"), "--image-size", "48", "--out", str(tmp_path / "compare")]  # fmt: skip
    assert main(argv) == 0
    assert f"report: {tmp_path / 'compare' / 'report.html'}" in capsys.readouterr().out
    assert (tmp_path / "compare" / "comparison" / "rows.csv").exists()

    images = [str(tmp_path / "data" / "ring" / f"{i}.png") for i in range(2)]
    argv = ["explain", "--model", str(tmp_path / "bagnet.keras"), "--images", *images, "--image-size", "48",
            "--methods", "evidence", "occlusion", "--out", str(tmp_path / "explain")]  # fmt: skip
    assert main(argv) == 0
    assert "Explanations of" in (tmp_path / "explain" / "report.html").read_text()
    assert main(["compare", "--model", "cnn", "--data", str(tmp_path / "data")]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


def test_tensorflow_start_up_lines_only_with_verbose():
    import subprocess
    import sys

    def stderr(*args):
        code = "import sys; from bagnet_keras.app.cli import main; sys.exit(main(['predict', *sys.argv[1:]]))"
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "top class" in done.stdout, done.stderr
        return done.stderr

    quiet = stderr()
    assert "oneDNN" not in quiet and "I0000" not in quiet
    assert "I0000" in stderr("--verbose")
