"""The release: a wheel and an sdist that `twine check` accepts, and a wheel that works installed, not editable.

The wheel goes into a fresh virtual environment, and its command runs from a folder away from the source tree,
so nothing of the checkout can stand in for what the wheel forgot. The fresh environment borrows the test
environment's third-party packages (TensorFlow and the rest, through a ``.pth`` file) instead of downloading
them: CI has no network but the registries, and the wheel's own files are what this test checks.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

import bagnet_keras

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "bagnet_keras", "data_tools")


def _run(*argv, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """`python -m build` of a copy of the sources (the checkout stays clean): dist/ holds a wheel and an sdist."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(
            ROOT / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    # --no-isolation: the build backend (setuptools, a dev extra) is already here, and CI has no index to fetch it from
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", src / "dist", ".", cwd=src)
    return src / "dist"


def test_build_makes_a_wheel_and_an_sdist_that_twine_accepts(dist):
    version = bagnet_keras.__version__
    wheel = dist / f"bagnet_keras-{version}-py3-none-any.whl"
    sdist = dist / f"bagnet_keras-{version}.tar.gz"
    assert sorted(dist.iterdir()) == sorted([wheel, sdist])
    out = _run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=dist)
    assert out.count("PASSED") == 2, out
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert "bagnet_keras/models/data/imagenet_classes.tsv" in names
    assert "data_tools/cli.py" in names and not any(n.startswith("tests/") for n in names)


def test_the_version_is_written_once():
    text = (ROOT / "CITATION.cff").read_text()
    assert f"\nversion: {bagnet_keras.__version__}\n" in text
    assert f"## [{bagnet_keras.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.dynamic]")[0]


def _fresh_venv(where: Path) -> Path:
    """A venv without pip that sees the test environment's third-party packages after its own."""
    _run(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent)
    python = where / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where).strip()
    # A plain path line: the dev environment's editable install of this package (a .pth of its own) is not read.
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _tiny_model_and_image(where: Path) -> tuple[Path, Path]:
    import keras
    from PIL import Image

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.save(where / "tiny.keras")
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(where / "image.png")
    return where / "tiny.keras", where / "image.png"


def test_the_wheel_installed_in_a_fresh_venv_runs_its_command(dist, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    wheel = next(dist.glob("*.whl"))
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
        cwd=tmp_path,
    )
    where = _run(python, "-c", "import bagnet_keras; print(bagnet_keras.__file__)", cwd=tmp_path).strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), where

    command = tmp_path / "venv" / "bin" / "bagnet-keras"
    assert _run(command, "--version", cwd=tmp_path).strip() == f"bagnet-keras {bagnet_keras.__version__}"
    assert "--per-class" in _run(command, "demo", "--help", cwd=tmp_path)
    model, image = _tiny_model_and_image(tmp_path)
    out = tmp_path / "explained"
    _run(command, "explain", "--model", model, "--images", image, "--methods", "gradcam", "--out", out, cwd=tmp_path)
    assert (out / "report.html").is_file()
    assert os.listdir(tmp_path / "venv" / "bin").count("bagnet-keras") == 1
