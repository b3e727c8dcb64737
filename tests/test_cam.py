import keras
import numpy as np
import pytest
import tensorflow as tf

from bagnet_keras.explain import GradCAM, cam, guided_backprop, guided_gradcam, occlusion

# The CAM family on new models, each map computed once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager


def _chain(name="backbone"):
    """A small ReLU CNN whose last conv keeps the input's 16x16 grid (so maps need no resizing)."""
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", name="c2")(x)
    x = keras.layers.Activation("relu", name="r2")(x)
    return keras.Model(inp, x, name=name)


def _flat_model(seed=0):
    keras.utils.set_random_seed(seed)
    backbone = _chain()
    x = keras.layers.GlobalAveragePooling2D(name="gap")(backbone.output)
    return keras.Model(backbone.input, keras.layers.Dense(3, name="out")(x))


def _images(n=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 16, 16, 3)).astype("float32")


def _hand_activations_and_grads(model, x, classes, upto="r2"):
    """Run the layers of a chain model by hand under a GradientTape."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    with tf.GradientTape() as tape:
        h = tf.constant(x)
        for layer in layers:
            h = layer(h)
            if layer.name == upto:
                a = h
                tape.watch(a)
        score = tf.gather(h, classes, axis=1, batch_dims=1)
    return a.numpy(), tape.gradient(score, a).numpy()


def _expected(method, model, x, classes, a, g):
    if method == "gradcam":
        w = g.mean(axis=(1, 2), keepdims=True)
    elif method == "gradcam++":
        alpha = np.where(g != 0, g**2 / (2 * g**2 + a.sum(axis=(1, 2), keepdims=True) * g**3 + 1e-30), 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    elif method == "layercam":
        w = np.maximum(g, 0)
    else:  # Score-CAM, one masked image per channel
        w = np.zeros((len(x), 1, 1, a.shape[-1]))
        for n in range(len(x)):
            scores = []
            for k in range(a.shape[-1]):
                m = a[n, ..., k]
                m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)
                scores.append(model.predict(x[n : n + 1] * m[None, ..., None], verbose=0)[0, classes[n]])
            e = np.exp(np.array(scores) - max(scores))
            w[n, 0, 0] = e / e.sum()
    return np.maximum((w * a).sum(axis=-1), 0)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_each_method_equals_a_hand_computation(method):
    model = _flat_model()
    x = _images()
    classes = np.array([0, 2, 1])
    a, g = _hand_activations_and_grads(model, x, classes)
    expected = _expected(method, model, x, classes, a, g)
    got = cam(model, x, class_index=classes, method=method, layer="r2", normalize=False)
    assert got.shape == (3, 16, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    # normalised maps span [0, 1]
    scaled = cam(model, x, class_index=classes, method=method, layer="r2")
    np.testing.assert_allclose(scaled.max(axis=(1, 2)), 1, atol=1e-6)
    np.testing.assert_allclose(scaled.min(axis=(1, 2)), 0, atol=1e-6)


def _nested_models(backbone):
    gap, dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="head")
    sequential = keras.Sequential([backbone, gap, dense], name="sequential_transfer")
    inp = keras.Input((16, 16, 3))
    functional = keras.Model(inp, dense(gap(backbone(inp, training=False))), name="functional_transfer")
    return sequential, functional, [*backbone.layers[1:], gap, dense]


@pytest.mark.parametrize("wrapper", ["sequential", "functional"])
def test_gradcam_on_a_layer_inside_a_nested_backbone(wrapper):
    keras.utils.set_random_seed(1)
    sequential, functional, chain = _nested_models(_chain())
    model = sequential if wrapper == "sequential" else functional
    x = _images(4, seed=1)
    explainer = GradCAM(model, layer="c1", normalize=False)
    assert explainer.layer_path == "backbone/c1"
    got = explainer(x)  # top class
    with tf.GradientTape() as tape:
        h = tf.constant(x)
        for layer in chain:
            h = layer(h)
            if layer.name == "c1":
                a = h
                tape.watch(a)
        top = tf.argmax(h, axis=1, output_type=tf.int32)
        score = tf.gather(h, top, axis=1, batch_dims=1)
    g = tape.gradient(score, a).numpy()
    expected = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(-1), 0)
    np.testing.assert_array_equal(explainer.class_index_, top.numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    # the default layer is the last 4-D one, found inside the backbone
    assert GradCAM(model).layer_path == "backbone/r2"


def test_maps_are_placed_on_the_input_by_receptive_field():
    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="valid")(inp)  # 14x14, patch centres at pixels 1..14
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(a))
    model = keras.Model(inp, out)
    x = _images(2, seed=2)
    explainer = GradCAM(model, layer="valid", normalize=False)
    full = explainer(x, class_index=1)
    acts, grads = _hand_activations_and_grads(model, x, np.array([1, 1]), upto="valid")
    small = np.maximum((grads.mean(axis=(1, 2), keepdims=True) * acts).sum(-1), 0)
    np.testing.assert_allclose(full[:, 1:15, 1:15], small, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(full[:, 0, 1:15], small[:, 0], rtol=1e-4, atol=1e-7)  # borders take the edge value


def _trained_classifier():
    """A CNN trained to tell whether a bright square is present; and a copy with re-initialised weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(256, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 2, 256)
    for n in np.flatnonzero(y):
        top, left = rng.integers(0, 12, 2)
        x[n, top : top + 4, left : left + 4] += 2.0
    keras.utils.set_random_seed(3)
    model = _flat_model(seed=3)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    randomized = keras.models.clone_model(model)  # same architecture, fresh random weights
    return model, randomized, x[np.flatnonzero(y)[:4]]


def _rank_correlation(a, b):
    ra = np.argsort(np.argsort(a.ravel()))
    rb = np.argsort(np.argsort(b.ravel()))
    return np.corrcoef(ra, rb)[0, 1]


def test_sanity_check_maps_depend_on_the_learned_weights():
    """Adebayo et al. 2018: a map that survives weight randomisation explains nothing about the model."""
    trained, randomized, x = _trained_classifier()
    methods = {
        **{
            m: lambda model, m=m: cam(model, x, class_index=1, method=m, layer="r2")
            for m in ("gradcam", "gradcam++", "scorecam", "layercam")
        },
        "occlusion": lambda model: occlusion(model, x, class_index=1, patch_size=4, stride=2),
        "guided": lambda model: np.abs(guided_backprop(model, x, class_index=1)).sum(-1),
        "deconvnet": lambda model: np.abs(guided_backprop(model, x, class_index=1, mode="deconvnet")).sum(-1),
    }
    for name, explain in methods.items():
        a, b = explain(trained), explain(randomized)
        correlation = np.mean([_rank_correlation(a[n], b[n]) for n in range(len(x))])
        # Measured: 0.03 to 0.18 for the gradient maps, about 0.45 for Score-CAM (the input alone
        # lights up a random ReLU net's masks), below zero for occlusion.
        assert correlation < 0.6, (name, correlation)


def test_occlusion_of_a_linear_model_is_exactly_predictable():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((10, 10, 2)), keras.layers.Flatten(), keras.layers.Dense(3)])
    w = model.layers[-1].kernel.numpy().reshape(10, 10, 2, 3)
    x = _images(2, seed=4)[..., :2][:, :10, :10]
    value = np.array([0.5, -1.0], dtype="float32")
    got = occlusion(model, x, class_index=[2, 0], patch_size=4, stride=3, value=value, batch_size=5)
    for n, c in enumerate([2, 0]):
        total = np.zeros((10, 10))
        count = np.zeros((10, 10))
        for top in (0, 3, 6):  # 0, 3 and the border square at 6
            for left in (0, 3, 6):
                window = np.s_[top : top + 4, left : left + 4]
                drop = (w[window][..., c] * (x[n][window] - value)).sum()
                total[window] += drop
                count[window] += 1
        np.testing.assert_allclose(got[n], total / count, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("relu", ["attribute", "activation", "layer"])
def test_guided_backprop_and_deconvnet_follow_their_relu_rules(relu):
    keras.utils.set_random_seed(5)
    hidden = keras.layers.Dense(6, activation="relu" if relu == "attribute" else None, name="hidden")
    layers = [keras.Input((3, 3, 1)), keras.layers.Flatten(), hidden]
    if relu == "activation":
        layers.append(keras.layers.Activation("relu"))
    elif relu == "layer":
        layers.append(keras.layers.ReLU())
    model = keras.Sequential([*layers, keras.layers.Dense(4, name="top")])
    x = _images(2, seed=5)[:, :3, :3, :1]
    w1, b1 = hidden.kernel.numpy(), hidden.bias.numpy()
    w2 = model.get_layer("top").kernel.numpy()
    pre = x.reshape(2, 9) @ w1 + b1
    for mode in ("guided", "deconvnet"):
        got = guided_backprop(model, x, class_index=[1, 3], mode=mode)
        for n, c in enumerate([1, 3]):
            g = w2[:, c]
            back = g * (g > 0) * (pre[n] > 0) if mode == "guided" else np.maximum(g, 0)
            np.testing.assert_allclose(got[n].ravel(), w1 @ back, rtol=1e-5, atol=1e-6)
    assert hidden.activation is (keras.activations.relu if relu == "attribute" else keras.activations.linear)


def test_guided_unit_visualisation_and_guided_gradcam():
    model = _flat_model(seed=6)
    x = _images(2, seed=6)
    unit = guided_backprop(model, x, layer="c2", unit=3)
    assert unit.shape == x.shape and np.abs(unit).sum() > 0
    maps = cam(model, x, method="gradcam")
    np.testing.assert_allclose(guided_gradcam(model, x), guided_backprop(model, x) * maps[..., None], rtol=1e-5)
    plain = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match="no plain ReLU"):
        guided_backprop(plain, x)


def test_bad_arguments_are_named():
    model = _flat_model()
    x = _images(1)
    with pytest.raises(ValueError, match="No layer named 'nope'"):
        cam(model, x, layer="nope")
    with pytest.raises(ValueError, match="4-D"):
        cam(model, x, layer="out")
    with pytest.raises(ValueError, match=r"method='gradcam\+'"):
        cam(model, x, method="gradcam+")
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cam(model, x, class_index=3)
    with pytest.raises(ValueError, match="unit=8"):
        guided_backprop(model, x, layer="c2", unit=8)
    with pytest.raises(ValueError, match="patch_size"):
        occlusion(model, x, patch_size=17)
    two = keras.Model(model.inputs, [model.output, keras.layers.Dense(2, name="region")(model.output)])
    with pytest.raises(ValueError, match="2 outputs"):
        cam(two, x)
    assert cam(two, x, output="region").shape == (1, 16, 16)
    twice = keras.Sequential([_chain("a"), keras.layers.Conv2D(3, 1), _chain("b")])
    with pytest.raises(ValueError, match="more than once"):
        cam(twice, x, layer="c1")


def test_compiled_functions_do_not_keep_models_alive():
    import gc
    import weakref

    from bagnet_keras import BagNet, evidence_map

    model = _flat_model(seed=7)
    cam(model, _images(1), method="gradcam")
    guided_backprop(model, _images(1))
    bagnet = BagNet(blocks=(1, 1, 1, 1), base_width=4, classes=3, classifier_activation=None)
    evidence_map(bagnet, np.zeros((1, 40, 40, 3)), stride=1)
    refs = [weakref.ref(model), weakref.ref(bagnet)]
    del model, bagnet
    gc.collect()
    assert [r() for r in refs] == [None, None]
