"""`bagnet-keras compare` streams into its output folder: SIGKILLed mid-run, the same command resumes it;
shards of one run merge into the single run's tables."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from compare_case import motif_dataset, saved_models

from bagnet_keras.app.cli import main
from bagnet_keras.core.stream import PARTS

HERE = os.path.dirname(os.path.abspath(__file__))
TABLES = ("rows.csv", "correlations.csv", "models.csv", "aggregates.csv")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A split of 6 test images and two tiny models; the uninterrupted run over them, in batches of 2."""
    root = tmp_path_factory.mktemp("case")
    motif_dataset(root / "data")
    case = root, saved_models(root)
    assert main(_argv(case, root / "whole")) == 0
    assert len(os.listdir(root / "whole" / "comparison" / PARTS)) == 3
    return case


def _argv(case, out, *more):
    root, models = case
    return [
        "compare",
        *(a for name, path in models.items() for a in ("--model", f"{name}={path}")),
        "--data",
        str(root / "data"),
        "--image-size",
        "48",
        "--batch-size",
        "2",
        "--out",
        str(out),
        *more,
    ]


@pytest.mark.backends
def test_compare_killed_mid_run_resumes_without_recomputing(case, tmp_path, capsys):
    parts = tmp_path / "killed" / "comparison" / PARTS
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "killpoint", "compare.py"), "2", *_argv(case, tmp_path / "killed")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == -9, done.stderr
    committed = sorted(os.listdir(parts))
    assert committed == ["part-000000.npz", "part-000001.npz"]
    assert not (tmp_path / "killed" / "comparison" / "rows.csv").exists()
    stamps = {name: os.stat(parts / name).st_mtime_ns for name in committed}
    capsys.readouterr()

    assert main(_argv(case, tmp_path / "killed")) == 0
    assert "2 batches of 2 images were committed" in capsys.readouterr().out
    for table in TABLES:
        resumed = (tmp_path / "killed" / "comparison" / table).read_bytes()
        assert resumed == (case[0] / "whole" / "comparison" / table).read_bytes(), table
    assert {name: os.stat(parts / name).st_mtime_ns for name in committed} == stamps  # not measured again
    assert len(os.listdir(parts)) == 3

    # the same folder with other arguments is refused, before anything is measured
    assert main(_argv(case, tmp_path / "killed", "--methods", "gradcam")) == 2
    assert "other arguments (differing: methods)" in capsys.readouterr().err


def test_three_shards_merge_into_the_single_run(case, tmp_path, capsys):
    shards = [str(tmp_path / f"shard-{i}") for i in range(3)]
    for i, folder in enumerate(shards):
        assert main(_argv(case, folder, "--shard", f"{i}/3")) == 0
        assert f"shard {i}/3 done" in capsys.readouterr().out
        assert os.listdir(os.path.join(folder, "comparison", PARTS)) == [f"part-00000{i}.npz"]
        assert not os.path.exists(os.path.join(folder, "report.html"))
    assert main(["merge", str(tmp_path / "merged"), *shards]) == 0
    for table in TABLES:
        merged = (tmp_path / "merged" / "comparison" / table).read_bytes()
        assert merged == (case[0] / "whole" / "comparison" / table).read_bytes(), table
    assert (tmp_path / "merged" / "report.html").exists()

    # merging what is not the shards of one run says what is wrong
    assert main(["merge", str(tmp_path / "bad"), shards[0], shards[2]]) == 2
    assert "missing [1]" in capsys.readouterr().err
    other = tmp_path / "other-1"
    shutil.copytree(shards[1], other)
    run = json.loads((other / "comparison" / "run.json").read_text())
    (other / "comparison" / "run.json").write_text(json.dumps({**run, "steps": 10}))
    assert main(["merge", str(tmp_path / "bad"), shards[0], str(other), shards[2]]) == 2
    assert "not shards of the same run (differing: steps; steps: 10 vs 20)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "shard, message",
    [
        ("3/2", "shard 3/2: the index must be in 0..1"),
        ("0/0", "shard 0/0: the count of shards must be at least 1"),
        ("two", "--shard 'two' is not I/N"),
        ("env", "neither JOB_COMPLETION_INDEX"),
    ],
)
def test_bad_shards_are_named(tmp_path, capsys, monkeypatch, shard, message):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    with pytest.raises(SystemExit) as exit:
        main(["compare", "--model", "a=a.keras", "--data", str(tmp_path), "--shard", shard])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_shard_parsing_moved_to_the_command_line():
    from bagnet_keras.app.shards import parse_shard

    assert parse_shard("env", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    with pytest.raises(ValueError, match="number of shards is not known"):
        parse_shard("env", {"JOB_COMPLETION_INDEX": "1"})


class _Slices:
    """An array read by slices only, as `data_tools.loader.ImageFiles` is."""

    def __init__(self, images):
        self.images, self.shape, self.reads = images, images.shape, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if not isinstance(index, slice):
            raise TypeError(f"read by slices. Received: {index!r}")
        self.reads.append((index.start, index.stop))
        return self.images[index]


def test_one_batching_path():
    import numpy as np

    from bagnet_keras.core.batches import batches

    x = np.arange(7 * 2 * 2 * 1, dtype="float32").reshape(7, 2, 2, 1)
    labels = np.arange(7)
    files = _Slices(x)
    got = list(batches(files, 3, labels=labels, wanted=lambda index: index != 1))
    assert [b.start for b in got] == [0, 3, 6] and got[1].images is None and got[1].labels is None
    assert files.reads == [(0, 3), (6, 9)]  # another shard's batch is not read
    np.testing.assert_array_equal(got[2].images, x[6:])
    # a dataset of uneven batches with labels by head, re-cut to the array's batches
    dataset = [(x[:2], {"a": labels[:2], "b": -labels[:2]}), (x[2:7], {"a": labels[2:7], "b": -labels[2:7]})]
    recut = list(batches(dataset, 3, exact=True))
    assert [len(b.images) for b in recut] == [3, 3, 1]
    assert [b.labels["b"].tolist() for b in recut] == [[0, -1, -2], [-3, -4, -5], [-6]]
    # single images (an unbatched dataset) are batches of one; labels beside replace the dataset's own
    single = list(batches(((image, 0) for image in x[:2]), 3, labels=[5, 6]))
    assert [(b.start, b.images.shape, b.labels.tolist()) for b in single] == [
        (0, (1, 2, 2, 1), [5]),
        (1, (1, 2, 2, 1), [6]),
    ]
    with pytest.raises(ValueError, match="one class per image: 2 labels for 7 images"):
        next(batches(x, 3, labels=[0, 1]))
