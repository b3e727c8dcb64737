"""compare(): every map of every model measured on every model; metric functions on hand-computed inputs."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from bagnet_keras import BagNet
from bagnet_keras.metrics.comparison import compare, is_bagnet
from bagnet_keras.metrics.faithfulness import (
    cell_scores,
    curve_area,
    deletion_curve,
    energy_in_mask,
    insertion_curve,
    masking_linearity,
    mean_ci,
    pointing_game,
    rank_correlation,
    shuffle_tiles,
)
from bagnet_keras.transfer.heads import build_classifier

SIZE = 32


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=8, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    cnn = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(8, 3, activation="relu"),
        ]
    )
    return {
        "cnn": build_classifier(cnn, {"shape": 3, "size": 2}, mode="scratch"),
        "bagnet": build_classifier(bagnet, {"shape": 3, "size": 2}, mode="scratch"),
    }


def test_compare_measures_every_map_on_every_model(models, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, SIZE, SIZE, 3)).astype("float32")
    labels = [0, 1, 2]
    masks = np.zeros((3, SIZE, SIZE), bool)
    masks[:, 8:16, 8:16] = True
    result = compare(models, x, labels, masks=masks, output="shape", steps=4, linearity_k=3, progress=False)
    assert is_bagnet(models["bagnet"], "shape") and not is_bagnet(models["cnn"], "shape")
    assert set(result.maps) == {("cnn", "gradcam"), ("bagnet", "evidence"), ("bagnet", "gradcam")}
    assert len(result.rows) == 3 * 3 and len(result.model_rows) == 2 * 3
    row = next(r for r in result.rows if r["model"] == "bagnet" and r["method"] == "evidence")
    assert {"deletion_area", "insertion_area", "deletion_on_cnn", "linearity_sum", "pointing", "energy"} <= set(row)
    assert result.curves["bagnet", "evidence"]["deletion"].shape == (3, 5)
    # the curves start at the unmasked probability of the true class
    probabilities = models["bagnet"].predict(x, verbose=0)["shape"][np.arange(3), labels]
    assert np.allclose(result.curves["bagnet", "evidence"]["deletion"][:, 0], probabilities, atol=1e-5)
    assert len(result.correlations) == 3 * 3  # three pairs of maps per image
    aggregate = result.aggregate("bagnet", "evidence", "deletion_area")
    assert aggregate["low"] <= aggregate["mean"] <= aggregate["high"] and aggregate["n"] == 3
    written = result.save(tmp_path)
    assert sorted(p.split("/")[-1] for p in written) == [
        "aggregates.csv",
        "comparison.json",
        "correlations.csv",
        "models.csv",
        "rows.csv",
    ]
    with open(tmp_path / "rows.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    summary = json.loads((tmp_path / "comparison.json").read_text())["summary"]
    assert set(summary["accuracy"]) == {"cnn", "bagnet"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(methods={"cnn": ["evidence"]}), "'cnn' is not a BagNet"),
        (dict(methods=["gradcam", "lime"]), "Unknown method 'lime'"),
        (dict(labels=[0]), "one class per image"),
        (dict(masks=np.zeros((2, 8, 8), bool)), "masks"),
        (dict(models={}), "must map names"),
        (dict(images=np.zeros((0, SIZE, SIZE, 3)), labels=[]), "`images` is empty"),
    ],
)
def test_compare_bad_arguments(models, kwargs, match):
    args = dict(models=models, images=np.zeros((2, SIZE, SIZE, 3)), labels=[0, 1], output="shape", progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        compare(**args)


# -- metric functions against values computed by hand


def _sum_score(x):
    """A one-class 'model' whose score is the sum of all pixels."""
    return x.sum(axis=(1, 2, 3))[:, None]


def test_deletion_of_a_known_ranking():
    image = np.zeros((4, 4, 1), "float32")
    image[0:2, 2:4] = 8.0  # cell 1 holds all the mass: 32
    image[2:4, 0:2] = 2.0  # cell 2: 8
    heatmap = cell_scores_to_map([[0.0, 5.0], [1.0, 0.0]])
    # mean fill = 40 / 16 = 2.5: masking cell 1 leaves 8 + 4 * 2.5, then cell 2 too gives 8 * 2.5 = 20
    assert deletion_curve(_sum_score, image, heatmap, 0, steps=2, cell=2).tolist() == [40.0, 18.0, 20.0]
    # insertion: all filled (40), then cell 1 restored (32 + 12 * 2.5), then cell 2 (32 + 8 + 8 * 2.5)
    assert insertion_curve(_sum_score, image, heatmap, 0, steps=2, cell=2).tolist() == [40.0, 62.0, 60.0]
    assert curve_area(np.array([40.0, 18.0, 20.0])) == pytest.approx((40 + 18) / 4 + (18 + 20) / 4)


def cell_scores_to_map(cells, cell=2):
    return np.kron(np.asarray(cells, dtype="float64"), np.ones((cell, cell)))


def test_map_metrics_by_hand():
    a = np.random.default_rng(0).normal(size=(16, 16))
    assert rank_correlation(a, a) == 1.0 and rank_correlation(a, 3 * a + 1) == 1.0
    assert rank_correlation(a, -a) == -1.0
    assert np.isnan(rank_correlation(a, np.zeros_like(a)))
    assert cell_scores(np.ones((10, 10)), 8).tolist() == [[1.0, 1.0], [1.0, 1.0]]  # partial cells average what exists
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    heatmap = np.zeros((4, 4))
    heatmap[0, 1], heatmap[3, 3], heatmap[2, 2] = 2.0, 1.0, -4.0
    assert pointing_game(heatmap, mask) and energy_in_mask(heatmap, mask) == pytest.approx(2 / 3)
    assert mean_ci([0.0, 1.0], n_boot=500)[0] == 0.5


def test_masking_is_linear_for_a_sum_and_shuffling_keeps_the_pixels():
    image = np.random.default_rng(1).uniform(0, 1, (8, 8, 2)).astype("float32")
    joint_sum, joint = masking_linearity(_sum_score, image, image[..., 0], 0, k=4, cell=2)
    assert joint_sum == pytest.approx(joint, rel=1e-5)
    shuffled = shuffle_tiles(image, grid=4, seed=3)
    assert not np.array_equal(shuffled, image)
    assert np.allclose(np.sort(shuffled.ravel()), np.sort(image.ravel()))


def test_compare_takes_a_dataset_of_batches(models):
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(4, SIZE, SIZE, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, {"shape": [0, 1, 2, 0], "size": [1, 0, 1, 0]})).batch(3)
    from_data = compare(models, data, output="size", methods=["gradcam"], steps=2, linearity_k=2, progress=False)
    from_arrays = compare(
        models, x, [1, 0, 1, 0], output="size", methods=["gradcam"], steps=2, linearity_k=2, progress=False
    )
    assert [r["label"] for r in from_data.rows] == [r["label"] for r in from_arrays.rows]
    assert np.allclose([r["deletion_area"] for r in from_data.rows], [r["deletion_area"] for r in from_arrays.rows])
    with pytest.raises(ValueError, match="pass output="):
        compare(models, data, progress=False)


# -- the batched passes and the streamed, resumable run


def test_batched_passes_equal_the_per_image_measures(models):
    """Every row of a streamed comparison equals deletion_curve / insertion_curve / masking_linearity per image."""
    from bagnet_keras.explain.registry import explain
    from bagnet_keras.metrics.faithfulness import logit_fn, probability_fn

    x = np.random.default_rng(2).normal(size=(5, SIZE, SIZE, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1])
    result = compare(models, x, labels, output="shape", steps=5, linearity_k=3, batch_size=2, progress=False)
    scorers = {name: logit_fn(model, "shape") for name, model in models.items()}
    for name, method in (("bagnet", "evidence"), ("cnn", "gradcam")):
        maps = explain(models[name], x, method, class_index=labels, output="shape")
        rows = [r for r in result.rows if (r["model"], r["method"]) == (name, method)]
        assert [r["image"] for r in rows] == list(range(5))
        for i, row in enumerate(rows):
            for other, scorer in scorers.items():
                curve = deletion_curve(probability_fn(scorer), x[i], maps[i], labels[i], steps=5, cell=8)
                column = "deletion_area" if other == name else f"deletion_on_{other}"
                assert row[column] == pytest.approx(curve_area(curve), abs=1e-5)
            curve = insertion_curve(probability_fn(scorers[name]), x[i], maps[i], labels[i], steps=5, cell=8)
            assert row["insertion_area"] == pytest.approx(curve_area(curve), abs=1e-5)
            np.testing.assert_allclose(result.curves[name, method]["insertion"][i], curve, atol=1e-5)
            linearity = masking_linearity(scorers[name], x[i], maps[i], labels[i], k=3, cell=8)
            assert (row["linearity_sum"], row["linearity_joint"]) == pytest.approx(linearity, abs=1e-4)
    # more linearity cells than deletion steps: the joint masking gets its own pass
    wide = compare(
        models, x[:2], labels[:2], output="shape", steps=2, linearity_k=4, methods={"cnn": ["gradcam"]}, progress=False
    )
    maps = explain(models["cnn"], x[:2], "gradcam", class_index=labels[:2], output="shape")
    expected = masking_linearity(scorers["cnn"], x[1], maps[1], labels[1], k=4, cell=8)
    assert (wide.rows[1]["linearity_sum"], wide.rows[1]["linearity_joint"]) == pytest.approx(expected, abs=1e-4)


def _streamed(models, x, labels, folder, **kwargs):
    args = dict(output="shape", steps=3, linearity_k=2, batch_size=2, progress=False, report_images=1)
    return compare(models, x, labels, output_dir=folder, **{**args, **kwargs})


def test_streamed_run_writes_parts_resumes_and_refuses_other_runs(models, tmp_path):
    x = np.random.default_rng(3).normal(size=(5, SIZE, SIZE, 3)).astype("float32")
    labels = [0, 1, 2, 0, 1]
    in_memory = compare(
        models, x, labels, output="shape", steps=3, linearity_k=2, batch_size=2, progress=False, report_images=1
    )
    folder = tmp_path / "run"
    streamed = _streamed(models, x, labels, folder)
    assert streamed.rows == in_memory.rows and streamed.correlations == in_memory.correlations
    assert sorted(os.listdir(folder / "parts")) == ["part-000000.npz", "part-000001.npz", "part-000002.npz"]
    assert {"rows.csv", "comparison.json", "run.json"} <= set(os.listdir(folder))
    # only the first image and the misclassified ones keep their pixels and maps
    wrong = sorted({r["image"] for r in streamed.model_rows if not r["correct"]})
    assert streamed.shown.tolist() == sorted({0, *wrong}) and len(streamed.images) == len(streamed.shown)
    assert streamed.maps["bagnet", "evidence"].shape == (len(streamed.shown), SIZE, SIZE)

    # a rerun after losing the last part measures that batch alone, and ends with the same rows
    stamps = {name: os.stat(folder / "parts" / name).st_mtime_ns for name in os.listdir(folder / "parts")}
    os.remove(folder / "parts" / "part-000002.npz")
    again = _streamed(models, x, labels, folder)
    assert again.rows == streamed.rows and again.model_rows == streamed.model_rows
    for name in ("part-000000.npz", "part-000001.npz"):
        assert os.stat(folder / "parts" / name).st_mtime_ns == stamps[name]

    with pytest.raises(ValueError, match="other arguments \\(differing: steps\\)"):
        _streamed(models, x, labels, folder, steps=4)
    with pytest.raises(ValueError, match="Batch 1 of the data differs"):
        _streamed(models, x[[0, 1, 3, 2, 4]], labels, folder)


def test_mean_ci_draws_resamples_in_blocks():
    values = np.random.default_rng(0).normal(size=3000)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, 3000, (2000, 3000))].mean(axis=1)
    assert mean_ci(values) == (values.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5))


def test_xla_passes_equal_the_plain_ones(models):
    x = np.random.default_rng(4).normal(size=(3, SIZE, SIZE, 3)).astype("float32")
    args = dict(output="shape", steps=3, linearity_k=2, methods={"cnn": ["gradcam"]}, batch_size=4, progress=False)
    plain = compare(models, x, [0, 1, 2], **args)
    xla = compare(models, x, [0, 1, 2], jit_compile=True, **args)
    for a, b in zip(plain.rows, xla.rows, strict=True):
        for metric in ("deletion_area", "deletion_on_bagnet", "insertion_area", "linearity_sum", "linearity_joint"):
            assert a[metric] == pytest.approx(b[metric], abs=1e-4), metric


def test_mixed_precision_rows_stay_close(models):
    x = np.random.default_rng(4).normal(size=(3, SIZE, SIZE, 3)).astype("float32")
    args = dict(output="shape", steps=3, linearity_k=2, batch_size=4, progress=False)
    plain = compare(models, x, [0, 1, 2], **args)
    mixed = compare(models, x, [0, 1, 2], dtype_policy="mixed_float16", **args)
    assert [r["method"] for r in mixed.rows] == [r["method"] for r in plain.rows]
    # Areas under the curves; the linearity test's k cells can change where float16 reorders near-tied cells.
    for a, b in zip(plain.rows, mixed.rows, strict=True):
        for metric in ("deletion_area", "insertion_area"):
            assert a[metric] == pytest.approx(b[metric], abs=1e-2), metric
    exact, approx = plain.evidence["predicted"], mixed.evidence["predicted"]
    assert np.abs(approx - exact).max() <= 1e-2 * np.abs(exact).max()
    with pytest.raises(ValueError, match="'half'"):
        compare(models, x, [0, 1, 2], dtype_policy="half", **args)


def test_passes_split_across_the_replicas_of_a_strategy():
    """MirroredStrategy over two logical CPUs (set before TensorFlow starts: a process of its own)."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "replicas.py")
    done = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    replicas, rows, gap = done.stdout.split()[1::2]
    assert (replicas, rows) == ("2", "5") and float(gap) <= 1e-5


def test_sanity_checks_ride_with_the_comparison_and_its_shards(models, tmp_path):
    from bagnet_keras.metrics.results import merge_shards

    x = np.random.default_rng(5).normal(size=(5, SIZE, SIZE, 3)).astype("float32")
    labels = [0, 1, 2, 0, 1]
    args = dict(
        output="shape",
        steps=2,
        linearity_k=2,
        batch_size=2,
        progress=False,
        sanity=2,
        methods={"cnn": ["gradcam", "saliency"], "bagnet": ["evidence"]},
    )
    whole = compare(models, x, labels, output_dir=str(tmp_path / "whole"), **args)
    checks = whole.sanity
    assert checks["images"] == 2 and len(checks["randomization"]) == len(checks["invariance"]) == 3
    by_key = {(e["model"], e["method"]): e for e in checks["randomization"]}
    assert by_key["cnn", "saliency"]["layers"][0] == "shape_logits"
    assert len(by_key["cnn", "saliency"]["spearman"]) == len(by_key["cnn", "saliency"]["layers"])
    shifted = {(e["model"], e["method"]): e["passed"] for e in checks["invariance"]}
    assert shifted["cnn", "saliency"] and shifted["bagnet", "evidence"]
    saved = json.load(open(tmp_path / "whole" / "sanity.json"))
    assert saved["randomization"][0]["layers"] == checks["randomization"][0]["layers"]
    # the cross-model deletion curves are kept: the BagNet's cells masked for the CNN
    assert whole.curves["bagnet", "evidence"]["deletion_on_cnn"].shape == (5, 3)
    # shard 1 (no first batch) runs no checks; the merge takes shard 0's
    for i in (1, 0):
        part = compare(models, x, labels, output_dir=str(tmp_path / f"shard{i}"), shard=(i, 2), **args)
        assert bool(part.sanity) == (i == 0)
    merged = merge_shards([str(tmp_path / "shard1"), str(tmp_path / "shard0")])
    assert json.dumps(merged.sanity, sort_keys=True) == json.dumps(checks, sort_keys=True)
    with pytest.raises(ValueError, match="sanity=-1"):
        compare(models, x, labels, **{**args, "sanity": -1})
