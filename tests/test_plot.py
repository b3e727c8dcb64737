import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from bagnet_keras import BagNet, evidence_map
from bagnet_keras.explain import top_patches
from bagnet_keras.report.plot import plot_evidence, plot_grid, plot_heatmap, plot_overlay, plot_patches, to_display

matplotlib.use("Agg")


def _image(size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(size, size, 3)).astype("uint8")


def test_heatmap_is_symmetric_around_zero_and_clipped_at_the_percentile():
    heatmap = np.linspace(-3, 1, 32 * 32).reshape(32, 32)
    fig = plot_heatmap(heatmap, _image(), percentile=90)
    assert isinstance(fig, Figure)
    evidence, edges = fig.axes[0].get_images()
    limit = np.percentile(np.abs(heatmap), 90)
    np.testing.assert_allclose(evidence.get_clim(), (-limit, limit))
    assert evidence.get_array().shape == (32, 32) and edges.get_array().shape == (32, 32)


def test_grid_draws_signed_and_unsigned_maps_differently(tmp_path):
    images = np.stack([_image(seed=s) for s in range(2)])
    maps = {"cam": np.random.default_rng(1).uniform(size=(2, 32, 32)), "evidence": np.full((2, 32, 32), -1.0)}
    fig = plot_grid(images, maps, row_titles=["a", "b"])
    assert len(fig.axes) == 6
    cam_panel, evidence_panel = fig.axes[1], fig.axes[2]
    assert cam_panel.get_images()[1].get_cmap().name == "jet"
    assert evidence_panel.get_images()[0].get_cmap().name == "RdBu_r"
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    # a signed method keeps its style in a row where its map happens to be non-negative
    maps["evidence"][1] = 1.0
    second_row_evidence = plot_grid(images, maps).axes[5]
    assert second_row_evidence.get_images()[0].get_cmap().name == "RdBu_r"


def test_evidence_and_patch_gallery_from_a_bagnet():
    model = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3, classifier_activation=None)
    x = np.random.default_rng(2).normal(size=(3, 48, 48, 3)).astype("float32")
    fig = plot_evidence(evidence_map(model, x, class_index=1), x, index=2)
    assert fig.axes[0].get_images()[0].get_array().shape == (48, 48)
    best = top_patches(model, x, class_index=1, k=3)
    gallery = plot_patches(best, cols=2)
    titles = [ax.get_title() for ax in gallery.axes if ax.get_images()]
    assert len(titles) == 3 and titles[0].startswith(f"{best.scores[0]:.2f}")


def test_figures_never_touch_pyplot():
    import matplotlib.pyplot as plt

    plt.close("all")
    plot_overlay(np.ones((32, 32)), _image())
    plot_heatmap(np.ones((32, 32)))
    assert plt.get_fignums() == []


def test_display_conversion_and_bad_sizes():
    assert to_display(np.array([[[0, 255, 0]]], dtype="uint8")).max() == 1.0
    np.testing.assert_allclose(to_display(np.array([[[-2.0, 0.0, 2.0]]])), [[[0, 0.5, 1]]])
    with pytest.raises(ValueError, match="differ in size"):
        plot_heatmap(np.ones((4, 4)), _image())
    with pytest.raises(ValueError, match="expected"):
        plot_grid(np.zeros((1, 8, 8, 3)), {"m": np.ones((1, 4, 4))})


def test_save_figure_writes_through_a_temporary_file(tmp_path, monkeypatch):
    from bagnet_keras.report.plot import save_figure

    fig = plot_overlay(np.ones((32, 32)), _image())
    assert save_figure(fig, tmp_path / "a.png") == str(tmp_path / "a.png")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    with pytest.raises(ValueError, match="extension"):
        save_figure(fig, tmp_path / "noext")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "b.png")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
