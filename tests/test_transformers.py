"""Vision transformers from keras-hub (issue 26, item 2): token grids, the CAM family at a block, attention
rollout, the gradient attributions, backbones by preset name and classifiers on them."""

import keras
import numpy as np
import pytest

from bagnet_keras.core.graph import iter_layers
from bagnet_keras.core.tokens import TokenGrid, last_token_layer, token_grid, transformer_blocks
from bagnet_keras.explain import attribution
from bagnet_keras.explain.attribution import baseline_images
from bagnet_keras.explain.cam import GradCAM
from bagnet_keras.explain.methods import METHODS
from bagnet_keras.explain.registry import explain
from bagnet_keras.explain.rollout import attention_rollout, rollout

keras_hub = pytest.importorskip("keras_hub", reason="the [hub] extra (keras-hub) is part of the test install")

SIZE, PATCH = 32, 8
# Each test builds new ViTs and calls their functions once or twice: eager calls skip their tracing (conftest).
pytestmark = pytest.mark.eager


def _vit(layers: int = 3, classes: int = 3, seed: int = 0, bias: bool = True) -> keras.Model:
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3),
        patch_size=PATCH,
        num_layers=layers,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        use_mha_bias=bias,
        use_mlp_bias=bias,
        use_patch_bias=bias,
    )
    return _numpy_weights(keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=classes), seed)


def _dinov2(num_layers: int, num_register_tokens: int = 2, **kwargs) -> keras.Model:
    return keras_hub.models.DINOV2Backbone(
        patch_size=PATCH,
        num_layers=num_layers,
        hidden_dim=16,
        num_heads=2,
        intermediate_dim=32,
        image_shape=(SIZE, SIZE, 3),
        num_register_tokens=num_register_tokens,
        position_embedding_shape=(SIZE, SIZE),
        **kwargs,
    )


def _numpy_weights(model: keras.Model, seed: int) -> keras.Model:
    """Every weight drawn with NumPy (Keras' seeded initializers draw other numbers on each backend): the
    tests see the same model on TensorFlow, JAX and PyTorch."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if len(shape) >= 2:
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif weight.path.endswith("gamma"):
            value = 1 + 0.2 * rng.normal(size=shape)
        else:
            value = 0.1 * rng.normal(size=shape)
        weight.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def vit():
    return _vit()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.backends
def test_the_tokens_are_laid_on_their_grid_without_a_reshape_function(vit):
    assert [path.split("/")[-1] for path, _ in transformer_blocks(vit)] == [f"transformer_block_{i}" for i in (1, 2, 3)]
    # the last block's patch tokens never reach the class token: the default is its input
    backbone = vit.backbone.name  # vi_t_backbone, numbered when the session built others before
    assert last_token_layer(vit)[0] == f"{backbone}/vit_encoder/transformer_block_2"
    cam = GradCAM(vit)
    assert cam.layer_path == f"{backbone}/vit_encoder/transformer_block_2"
    assert cam.tokens == TokenGrid(prefix=1, rows=4, columns=4, patch=PATCH)
    assert token_grid(vit, 17) == cam.tokens
    assert token_grid(vit, 18).prefix == 2  # DeiT's class and distillation tokens
    with pytest.raises(ValueError, match="15 tokens does not lay out on 32x32"):
        token_grid(vit, 15)


@pytest.mark.backends
def test_every_method_explains_a_vit(vit, images):
    for name, row in METHODS.items():
        if row.bagnet_only:
            continue
        maps = explain(vit, images, name)
        assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all(), name
        if row.family == "cam" and not maps.any():
            continue  # the CAM family's ReLU: a weighted sum negative everywhere, as a random net may give
        assert maps.std(axis=(1, 2)).min() > 0, f"{name} gives a constant map"


def test_the_last_block_gives_zero_and_a_named_block_its_map(vit, images):
    last = GradCAM(vit, layer="transformer_block_3", normalize=False)(images)
    assert np.abs(last).max() == 0  # the final normalisation is per token: patch tokens do not reach the logit
    first = GradCAM(vit, layer="transformer_block_1", normalize=False)(images)
    assert first.max() > 0


@pytest.mark.backends
def test_a_vit_whose_only_nonzero_token_is_one_patch_lights_that_patch():
    vit = _vit(layers=2)
    embedding = vit.backbone.get_layer("vit_patching_and_embedding")
    for weight in (embedding.patch_embedding.bias, embedding.position_embedding.embeddings):
        weight.assign(np.zeros(weight.shape, "float32"))
    row, column = 2, 1
    x = np.zeros((1, SIZE, SIZE, 3), "float32")
    x[:, row * PATCH : (row + 1) * PATCH, column * PATCH : (column + 1) * PATCH] = 1.0
    cam = GradCAM(vit, layer="vit_patching_and_embedding", normalize=False)
    maps = np.concatenate([cam(x, class_index=k) for k in range(3)])
    lit = maps[maps.max(axis=(1, 2)) > 0]
    assert len(lit) > 0
    for heat in lit:
        top, left = np.unravel_index(heat.argmax(), heat.shape)
        assert (top // PATCH, left // PATCH) == (row, column)
        # nothing beyond the neighbouring patches' centres, where the linear placement reaches
        mask = np.zeros_like(heat, bool)
        mask[row * PATCH - PATCH // 2 : (row + 1) * PATCH + PATCH // 2, column * PATCH - PATCH // 2 :][
            :, : 2 * PATCH
        ] = True
        assert heat[~mask].max() == 0


@pytest.mark.backends
def test_rollout_of_uniform_attention_is_uniform_over_the_patches(images):
    vit = _vit(seed=1)
    for block in vit.backbone.get_layer("vit_encoder").encoder_layers:
        query = block.mha._query_dense
        for weight in query.weights:
            weight.assign(np.zeros(weight.shape, "float32"))
    maps = attention_rollout(vit, images, normalize=False)
    assert maps.min() > 0 and np.allclose(maps, maps.flat[0], rtol=1e-6)
    identity = np.broadcast_to(np.eye(17), (2, 2, 17, 17))
    flows = rollout([identity] * 3, prefix=1)
    assert flows.shape == (2, 16) and (flows == 0).all()  # the class token takes nothing from the patches


def test_rollout_refuses_a_model_without_attention(images):
    cnn = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="no MultiHeadAttention layer.*'gradcam'"):
        attention_rollout(cnn, images)


@pytest.mark.parametrize("family", ["deit", "dinov2"])
def test_deit_and_dinov2_lay_out_their_extra_tokens(family, images):
    keras.utils.set_random_seed(0)
    if family == "deit":
        model = keras_hub.models.DeiTBackbone(
            image_shape=(SIZE, SIZE, 3),
            patch_size=(PATCH, PATCH),
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            intermediate_dim=32,
        )
        prefix = 2  # class and distillation tokens
    else:
        model = _dinov2(num_layers=2)
        prefix = 3  # class and two register tokens
    head = keras.layers.Dense(3)(model.outputs[0][:, 0])
    classifier = keras.Model(model.inputs, head)
    cam = GradCAM(classifier)
    assert cam.tokens == TokenGrid(prefix, 4, 4, PATCH)
    for name in ("gradcam", "rollout", "gradient_rollout", "integrated_gradients", "epsilon_lrp"):
        maps = explain(classifier, images, name)
        assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all() and maps.std() > 0, name
    _numpy_weights(classifier, 3)
    classes = np.array([0, 1])
    maps = attribution(classifier, images, classes, method="deeplift")
    delta = _class_logits(classifier, images, classes) - _class_logits(classifier, np.zeros_like(images), classes)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5 * np.abs(delta).max())


@pytest.mark.backends
def test_a_classifier_on_a_vit_fine_tunes_its_last_block_and_reloads(tmp_path, images):
    from bagnet_keras.transfer.heads import build_classifier

    backbone = _vit().backbone
    model = build_classifier(backbone, {"city": 3, "region": 2}, mode="finetune", trainable_from="transformer_block_3")
    trained = {w.path.split("/")[0] for w in model.trainable_weights} | {
        w.path.split("/")[1] for w in model.trainable_weights if w.path.startswith("vit_encoder/")
    }
    assert {"transformer_block_3", "city_logits", "region_logits"} <= trained
    assert not {"transformer_block_1", "transformer_block_2", "vit_patching_and_embedding"} & trained
    model.save(tmp_path / "vit.keras")
    loaded = keras.saving.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)["city"]), keras.ops.convert_to_numpy(model(images)["city"]), atol=1e-6
    )
    maps = explain(loaded, images, "gradcam", output="region")
    assert maps.shape == (2, SIZE, SIZE) and maps.std() > 0


def test_a_preset_loads_from_its_folder_and_offline_names_the_preset_and_the_cache(tmp_path, monkeypatch, images):
    from bagnet_keras.transfer.backbones import get_backbone
    from bagnet_keras.transfer.hub import load_hub_backbone

    backbone = _vit().backbone
    backbone.save_to_preset(str(tmp_path / "preset"))
    loaded = load_hub_backbone(tmp_path / "preset")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(backbone(images)), atol=1e-6
    )
    record = get_backbone("ViT-Base-Patch16-224")
    assert (record.pretrained, record.input_size, record.finetune_from) == (
        "vit_base_patch16_224_imagenet",
        224,
        "transformer_block_12",
    )
    # Kaggle's API at 127.0.0.1:80, where nothing listens: what a machine without network meets.
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(OSError, match=f"'vit_base_patch16_224_imagenet'.*{tmp_path / 'cache'}"):
        record.builder(weights=None)


def _randomised_vit(bias: bool) -> keras.Model:
    """Layer norms' scales (and shifts) away from 1 (and 0); bias-free: no constant added anywhere, the class
    token and the position embeddings included."""
    model = _vit(layers=2, seed=4, bias=bias)
    rng = np.random.default_rng(4)
    for _, layer in iter_layers(model):
        if isinstance(layer, keras.layers.LayerNormalization):
            layer.gamma.assign(1 + rng.normal(scale=0.3, size=layer.gamma.shape))
            layer.beta.assign(rng.normal(scale=0.3, size=layer.beta.shape) if bias else np.zeros(layer.beta.shape))
    if not bias:
        embedding = model.backbone.get_layer("vit_patching_and_embedding")
        for weight in (embedding.position_embedding.embeddings, embedding.class_token, model.output_dense.bias):
            weight.assign(np.zeros(weight.shape, "float32"))
    return model


def _class_logits(model, x, classes):
    return keras.ops.convert_to_numpy(model(x))[np.arange(len(x)), classes]


@pytest.mark.backends
@pytest.mark.parametrize("baseline", ["zeros", "blur"])
def test_deeplift_sums_exactly_on_a_vit(baseline):
    """Attention's two products and its softmax are split exactly, so DeepLIFT still sums to the difference."""
    model = _randomised_vit(bias=True)
    x, classes = np.random.default_rng(1).normal(size=(3, SIZE, SIZE, 3)).astype("float32"), np.array([0, 1, 2])
    maps = attribution(model, x, classes, method="deeplift", baseline=baseline)
    delta = _class_logits(model, x, classes) - _class_logits(model, baseline_images(x, baseline), classes)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), delta, rtol=1e-4, atol=1e-5 * np.abs(delta).max())
    assert not np.allclose(maps, attribution(model, x, classes, method="gradient_x_input"), atol=1e-2)


@pytest.mark.backends
def test_epsilon_lrp_conserves_relevance_on_a_bias_free_vit():
    """The attention held constant and the standard deviation held (Ali et al. 2022): relevance sums to the logit."""
    model = _randomised_vit(bias=False)
    x, classes = np.random.default_rng(2).normal(size=(3, SIZE, SIZE, 3)).astype("float32"), np.array([2, 0, 1])
    relevance = attribution(model, x, classes, method="epsilon_lrp", epsilon=1e-9)
    logits = _class_logits(model, x, classes)
    np.testing.assert_allclose(relevance.sum(axis=(1, 2)), logits, rtol=1e-4, atol=1e-5 * np.abs(logits).max())


def test_compare_and_the_report_set_a_vit_beside_a_bagnet(tmp_path, images):
    from bagnet_keras import BagNet
    from bagnet_keras.metrics.comparison import compare
    from bagnet_keras.report.html import write_report
    from bagnet_keras.transfer.heads import build_classifier

    keras.utils.set_random_seed(0)
    bagnet = BagNet(
        blocks=(1, 1, 1, 1), kernel3=(1, 1, 0, 0), base_width=8, include_top=False, input_shape=(SIZE, SIZE, 3)
    )
    models = {
        "bagnet": build_classifier(bagnet, {"label": 3}, mode="scratch"),
        "vit": _numpy_weights(build_classifier(_vit().backbone, {"label": 3}, mode="scratch"), 5),
    }
    methods = {"bagnet": ["evidence"], "vit": ["gradcam", "rollout", "integrated_gradients"]}
    result = compare(models, images, [0, 2], methods=methods, steps=4, linearity_k=3, progress=False)
    assert set(result.maps) == {("bagnet", "evidence"), *(("vit", m) for m in methods["vit"])}
    for key, maps in result.maps.items():
        assert maps.shape == (2, SIZE, SIZE) and np.isfinite(maps).all(), key
    rows = [row for row in result.rows if row["model"] == "vit"]
    assert len(rows) == 2 * 3 and all(np.isfinite(row["deletion_area"]) for row in rows)
    report = write_report(result, ["a", "b", "c"], tmp_path / "report")
    text = open(report, encoding="utf-8").read()
    assert "rollout" in text and "vit" in text
    (key, path), *others = result.summary["layers"].items()
    assert not others and key == "vit/gradcam" and path.endswith("/vit_encoder/transformer_block_2")
    assert f"vit/gradcam at <code>{path}</code>" in text


@pytest.mark.backends
def test_gradient_rollout_is_class_specific_and_zero_where_attention_does_not_matter(images):
    from bagnet_keras.explain.rollout import gradient_rollout

    vit = _vit(seed=2)
    by_class = [gradient_rollout(vit, images, class_index=k, normalize=False) for k in range(3)]
    assert all(np.isfinite(m).all() and m.std() > 0 for m in by_class)
    assert not np.allclose(by_class[0], by_class[1])  # plain rollout is the same for every class
    np.testing.assert_array_equal(attention_rollout(vit, images, class_index=0), attention_rollout(vit, images, 1))
    # values of zero: the attention's output is its bias whatever the attention, so no gradient weights it
    for block in vit.backbone.get_layer("vit_encoder").encoder_layers:
        block.mha._value_dense.kernel.assign(np.zeros(block.mha._value_dense.kernel.shape, "float32"))
    assert np.abs(gradient_rollout(vit, images, class_index=0, normalize=False)).max() == 0


@pytest.mark.parametrize("mode", ["transfer", "finetune"])
def test_fit_classifier_trains_a_vit_in_transfer_and_fine_tune_modes(mode, tmp_path):
    import tensorflow as tf

    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.training import fit_classifier
    from data_tools.synthetic import textures

    images, labels = textures(8, SIZE, seed=0)
    data = tf.data.Dataset.from_tensor_slices((images.astype("float32") / 127.5 - 1, labels)).batch(8)
    model = build_classifier(_vit().backbone, {"texture": 3}, mode=mode, trainable_from="transformer_block_3")
    before = {w.path: np.array(w) for w in model.weights}
    history = fit_classifier(model, data, data, epochs=2, head_epochs=1, patience=None, verbose=0, output_dir=tmp_path)
    changed = {path for path, value in before.items() if not np.array_equal(value, _value(model, path))}
    blocks = {path.split("/")[1] for path in changed if path.startswith("vit_encoder/")}
    assert any(path.startswith("texture_logits") for path in changed)
    # fine-tuning trains from the last block on: it and the encoder's final normalisation
    assert blocks == (set() if mode == "transfer" else {"transformer_block_3", "ln"})
    assert not any(path.startswith("vit_patching_and_embedding") for path in changed)
    assert history["phase"][-1] == ("train" if mode == "transfer" else "finetune")
    assert (tmp_path / "best.keras").exists()


def _value(model, path):
    return np.array(next(w for w in model.weights if w.path == path))


def test_a_failing_replacement_leaves_no_patch_behind(vit, images):
    from bagnet_keras.core.graph import run_graph, with_attention

    block = vit.backbone.get_layer("vit_encoder").encoder_layers[0]

    def failing(layer):
        if layer is block:
            return lambda *args, **kwargs: 1 / 0
        if isinstance(layer, keras.layers.MultiHeadAttention):
            return with_attention(layer, lambda *args: 1 / 0)
        return layer

    with pytest.raises(ZeroDivisionError):
        run_graph(vit, images, failing)
    assert "call" not in vars(block) and "_compute_attention" not in vars(block.mha)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(run_graph(vit, images)), keras.ops.convert_to_numpy(vit(images))
    )


def test_attention_the_rules_cannot_split_is_refused_by_name(images):
    class Scaled(keras.layers.MultiHeadAttention):
        def _compute_attention(self, query, key, value, *args, **kwargs):
            return super()._compute_attention(2.0 * query, key, value, *args, **kwargs)

    inputs = keras.Input((SIZE, SIZE, 3))
    tokens = keras.layers.Reshape((16, 8))(keras.layers.Conv2D(8, PATCH, strides=PATCH)(inputs))
    for attention in (Scaled(2, 4, name="scaled"), keras.layers.MultiHeadAttention(2, 4, use_gate=True, name="gated")):
        model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(attention(tokens, tokens))))
        for method in ("epsilon_lrp", "deeplift"):
            with pytest.raises(ValueError, match=f"layer '{attention.name}'"):
                explain(model, images, method)
    with pytest.raises(ValueError, match="computes its attention its own way"):
        explain(keras.Model(inputs, keras.layers.Flatten()(Scaled(2, 4)(tokens, tokens))), images, "gradient_rollout")
    swiglu = _dinov2(num_layers=1, use_swiglu_ffn=True)
    model = keras.Model(swiglu.inputs, keras.layers.Dense(2)(swiglu.outputs[0][:, 0]))
    with pytest.raises(ValueError, match="DINOV2SwiGLUFFN"):
        explain(model, images, "deeplift")


def test_a_dinov2_preset_is_built_at_the_size_asked(tmp_path):
    from bagnet_keras.transfer.hub import load_hub_backbone

    keras.utils.set_random_seed(0)
    backbone = _dinov2(num_layers=1, num_register_tokens=0)
    backbone.save_to_preset(str(tmp_path / "dinov2"))
    wider = load_hub_backbone(tmp_path / "dinov2", image_shape=(48, 48, 3))
    assert tuple(wider(np.zeros((1, 48, 48, 3), "float32")).shape) == (1, 1 + 36, 16)


def test_model_randomization_walks_a_vits_layers_one_by_one(images):
    from bagnet_keras.metrics.sanity import model_randomization

    vit = _vit(layers=2, seed=6)
    result = model_randomization(vit, images, ["gradcam"], class_index=[0, 1], max_steps=3)
    leaves = [path for group in result.groups for path in group]
    assert not any(
        path.endswith(("vit_encoder", "transformer_block_1", "transformer_block_2", "/mlp")) for path in leaves
    )
    assert any(path.endswith("transformer_block_1/mha") for path in leaves)
    assert np.isfinite(result.spearman["gradcam"]).all()


@pytest.mark.backends
def test_gradient_rollout_explains_the_probability_when_asked(vit, images):
    by_logit = explain(vit, images, "gradient_rollout", class_index=[0, 1])
    by_probability = explain(vit, images, "gradient_rollout", class_index=[0, 1], target="probability")
    assert np.isfinite(by_probability).all() and not np.allclose(by_logit, by_probability, atol=1e-3)


def test_a_resumed_training_tells_the_fine_tuned_blocks_apart():
    from bagnet_keras.transfer.heads import build_classifier
    from bagnet_keras.transfer.resume import model_signature

    backbone = _vit().backbone
    signatures = [
        model_signature(build_classifier(backbone, {"t": 3}, mode="finetune", trainable_from=f"transformer_block_{k}"))
        for k in (2, 3)
    ]
    assert signatures[0] != signatures[1]


def test_without_keras_hub_the_vit_names_say_how_to_install_it(monkeypatch):
    import sys

    from bagnet_keras.transfer.backbones import get_backbone

    monkeypatch.setitem(sys.modules, "keras_hub", None)  # what an install without the [hub] extra meets
    with pytest.raises(ImportError, match=r'pip install "bagnet-keras\[hub\]"'):
        get_backbone("vit_base_patch16_224").builder(weights=None)
