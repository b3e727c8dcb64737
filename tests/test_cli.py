import pytest

from bagnet_keras.cli import main


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
