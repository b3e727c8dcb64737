import keras
import numpy as np
import pytest
from conftest import TINY, build_tiny, fixture_path, tiny_config, tiny_outputs

from bagnet_keras import BagNet, BagNet9, BagNet17, BagNet33, preprocess_input
from bagnet_keras.models import bagnet_geometry, evidence_model

# Many small BagNets, each predicted or explained once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager

EXPECTED_PATCH = {"tiny33": 33, "tiny9": 9, "tiny21": 21}


@pytest.mark.backends
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("fmt", ["pth.tar", "dp.pth"])
def test_parity_with_the_authors_model(name, fmt):
    """Logits and per-position logits equal those of the authors' PyTorch code."""
    model = build_tiny(name, weights=fixture_path(f"{name}.{fmt}"))
    out = tiny_outputs(name)
    np.testing.assert_allclose(preprocess_input(out["images"]), out["inputs"], atol=1e-5)
    logits = model.predict(out["inputs"], verbose=0)
    evidence = evidence_model(model).predict(out["inputs"], verbose=0)
    assert evidence.shape == out["evidence"].shape
    assert np.abs(logits - out["logits"]).max() <= 1e-4
    assert np.abs(evidence - out["evidence"]).max() <= 1e-4


@pytest.mark.parametrize("name", TINY)
def test_a_patch_alone_gives_the_evidence_at_its_position(name):
    model = build_tiny(name, weights=fixture_path(f"{name}.pth.tar"))
    geometry = bagnet_geometry(model)
    assert geometry.patch_size == EXPECTED_PATCH[name] and geometry.stride == 8 and geometry.offset == 0
    x = tiny_outputs(name)["inputs"][:1]
    evidence = evidence_model(model).predict(x, verbose=0)[0]
    q, s = geometry.patch_size, geometry.stride
    positions = [(0, 0), (1, 2), (evidence.shape[0] - 1, evidence.shape[1] - 1)]
    patches = np.stack([x[0, s * i : s * i + q, s * j : s * j + q] for i, j in positions])
    alone = model.predict(patches, verbose=0)  # each patch yields a 1x1 grid
    for k, (i, j) in enumerate(positions):
        np.testing.assert_allclose(alone[k], evidence[i, j], atol=1e-4)
    # and the logits are the mean of the evidence map
    np.testing.assert_allclose(evidence.mean(axis=(0, 1)), model.predict(x, verbose=0)[0], rtol=1e-5, atol=1e-6)


def test_published_models_table():
    """Patch size, output grid at 224x224 and parameters of BagNet-9/17/33."""
    expected = {BagNet9: (9, 27), BagNet17: (17, 26), BagNet33: (33, 24)}
    for builder, (patch, grid) in expected.items():
        model = builder(weights=None)
        assert bagnet_geometry(model).patch_size == patch
        assert evidence_model(model).compute_output_shape((1, 224, 224, 3)) == (1, grid, grid, 1000)
        assert model.output_shape == (None, 1000)
    # ResNet-50 bottlenecks with 3x3 convolutions only where kernel3 says so:
    # BagNet-33 has every stage's first middle conv 3x3, so the most weights.
    assert BagNet33(weights=None).count_params() == 18_363_304


def test_include_top_false_and_pooling():
    feats = BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False)
    assert feats.output_shape == (None, None, None, 256)
    assert BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False, pooling="avg").output_shape == (None, 256)
    assert BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False, pooling="max").output_shape == (None, 256)
    assert bagnet_geometry(feats).patch_size == 33


def test_stem_width_sets_the_stem_alone():
    model = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=4, stem_width=16, classes=3, classifier_activation=None
    )
    assert model.get_layer("conv1_conv").compute_output_shape((1, 32, 32, 3))[-1] == 16
    assert model.get_layer("conv2_block1_0_conv").kernel.shape == (1, 1, 16, 16)
    assert model.get_layer("conv2_block1_1_conv").kernel.shape == (1, 1, 16, 4)
    assert bagnet_geometry(model).patch_size == 9
    x = np.random.default_rng(0).normal(size=(2, 48, 48, 3)).astype("float32")
    evidence = evidence_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(evidence.mean(axis=(1, 2)), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_input_tensor_and_fixed_input_shape():
    inp = keras.Input((40, 40, 3))
    model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=8, classes=3, input_tensor=inp)
    assert model.input_shape == (None, 40, 40, 3)
    assert model.predict(np.zeros((2, 40, 40, 3)), verbose=0).shape == (2, 3)
    with pytest.raises(ValueError, match="evidence"):
        evidence_model(BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_shape=(224, 224)), r"rank 3.*\(224, 224\)"),
        (dict(input_shape=(64, 64, 1)), r"3 channels.*\(64, 64, 1\)"),
        (dict(input_shape=(64, 64, 4)), r"3 channels.*\(64, 64, 4\)"),
        (dict(input_shape=(20, 20, 3)), r"\(20, 20, 3\).*smaller.*33"),
        (dict(input_shape=("64", 64, 3)), r"integers.*'64'"),
        (dict(input_shape="224x224"), r"'224x224'"),
        (dict(blocks=(1, 1, 1)), r"blocks=\(1, 1, 1\)"),
        (dict(kernel3=(1, 1, 1, -1)), r"kernel3=\(1, 1, 1, -1\)"),
        (dict(strides=(2, 2, 3, 1)), r"strides=\(2, 2, 3, 1\)"),
        (dict(base_width=0), r"base_width=0"),
        (dict(stem_width=2.5), r"stem_width=2.5"),
        (dict(classes=0), r"classes=0"),
        (dict(pooling="mean"), r"pooling='mean'"),
        (dict(weights="imagenet"), r"BagNet33"),
        (dict(weights="no/such/file.pth"), r"no/such/file.pth"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, match):
    kwargs = {"blocks": (1, 1, 1, 1), "base_width": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        BagNet(**kwargs)


def test_imagenet_top_needs_1000_classes():
    with pytest.raises(ValueError, match="classes=10"):
        BagNet33(weights="imagenet", classes=10)


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((8, 8)), r"shape \(8, 8\)"),
        (np.zeros((1, 8, 8, 1)), r"3 channels.*\(1, 8, 8, 1\)"),
        (np.zeros((1, 8, 8, 4)), r"3 channels.*\(1, 8, 8, 4\)"),
        (np.array([[["a", "b", "c"]]]), r"real numbers.*<U1"),
    ],
)
def test_preprocess_input_rejects_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        preprocess_input(images)


def test_checkpoint_of_another_configuration_is_rejected():
    with pytest.raises(ValueError, match=r"layer3\.0\.conv2\.weight.*shape"):
        build_tiny("tiny33", weights=fixture_path("tiny9.pth.tar"))
    c = tiny_config("tiny33")
    with pytest.raises(ValueError, match=r"fc\.weight"):
        BagNet(c["blocks"], c["kernel3"], base_width=8, classes=7, weights=fixture_path("tiny33.pth.tar"))


@pytest.mark.backends
@pytest.mark.parametrize("name", ["tiny21"])
def test_keras_save_and_load_round_trip(tmp_path, name):
    model = build_tiny(name, weights=fixture_path(f"{name}.pth.tar"))
    x = tiny_outputs(name)["inputs"]
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    np.testing.assert_array_equal(
        evidence_model(loaded).predict(x, verbose=0), evidence_model(model).predict(x, verbose=0)
    )
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    again = build_tiny(name, weights=weights)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_full_size_round_trip(tmp_path):
    model = BagNet9(weights=None)
    path = tmp_path / "bagnet9.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert bagnet_geometry(loaded).patch_size == 9


@pytest.mark.backends
@pytest.mark.traced  # the folded path as a graph, and compiled with XLA
def test_predict_folds_batchnorm_and_matches_keras_predict():
    from bagnet_keras.models.inference import BagNetModel, foldable_pairs

    model = BagNet(blocks=(1, 1, 1, 1), kernel3=(1, 1, 1, 0), base_width=8, classes=5, classifier_activation=None)
    assert isinstance(model, BagNetModel)
    # every BatchNorm follows a convolution it alone uses, the stem's included
    pairs = foldable_pairs(model)
    assert len(pairs) == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # statistics that are not the identity, so the folding is exercised
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c), rng.uniform(0.5, 2, c)]
            )
    x = rng.normal(size=(7, 40, 40, 3)).astype("float32")
    reference = keras.Model.predict(model, x, batch_size=3, verbose=0)
    fast = model.predict(x, batch_size=3, verbose=0)
    assert fast.shape == (7, 5) and np.allclose(fast, reference, rtol=1e-4, atol=1e-4)
    model.get_layer("conv1_bn").gamma.assign(np.zeros(8))  # the folded path follows the weights
    assert np.allclose(model.predict(x, verbose=0), keras.Model.predict(model, x, verbose=0), rtol=1e-4, atol=1e-4)
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices(x).batch(4)  # anything but an array takes Keras' own path
    assert np.allclose(model.predict(data, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    plain = model.predict(x, verbose=0)
    model.jit_compile = True  # Keras' switch; the folded path compiles with XLA then
    assert np.allclose(model.predict(x, verbose=0), plain, rtol=1e-4, atol=1e-4)


@pytest.mark.backends
@pytest.mark.parametrize("policy, tolerance", [("mixed_float16", 1e-2), ("mixed_bfloat16", 2e-2)])
def test_mixed_precision_keeps_logits_and_evidence(policy, tolerance):
    """Predictions and evidence maps of a mixed precision copy stay within `tolerance` of float32's range."""
    from bagnet_keras import evidence_map
    from bagnet_keras.models.inference import BagNetModel, with_dtype_policy
    from bagnet_keras.transfer.heads import build_classifier

    keras.utils.set_random_seed(0)
    model = BagNet(blocks=(1, 1, 1, 1), base_width=8, classes=5, input_shape=(48, 48, 3))
    fast = with_dtype_policy(model, policy)
    assert isinstance(fast, BagNetModel) and fast.get_layer("conv1_conv").compute_dtype == policy.split("_")[1]
    x = np.random.default_rng(0).normal(size=(3, 48, 48, 3)).astype("float32")
    reference, mixed = model.predict(x, verbose=0), fast.predict(x, verbose=0)
    assert mixed.dtype == np.float32
    assert np.abs(mixed - reference).max() <= tolerance * np.abs(reference).max()
    exact, approx = evidence_map(model, x).maps, evidence_map(fast, x).maps
    assert np.abs(approx - exact).max() <= tolerance * np.abs(exact).max()
    # a transfer model with a nested backbone: the backbone's layers change too
    nested = build_classifier(
        BagNet(blocks=(1, 1, 1, 1), base_width=8, include_top=False, input_shape=(48, 48, 3)),
        {"a": 2, "b": 3},
        mode="scratch",
    )
    copy = with_dtype_policy(nested, policy)
    assert {out.dtype for out in copy.outputs} == {"float32"}
    got, want = copy.predict(x, verbose=0), nested.predict(x, verbose=0)
    for head in ("a", "b"):
        assert np.abs(np.asarray(got[head]) - want[head]).max() <= tolerance
    with pytest.raises(ValueError, match="'float8'"):
        with_dtype_policy(model, "float8")
