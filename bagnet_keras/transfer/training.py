"""Training a `build_classifier` model without ceremony: two phases, class weights, early stopping, checkpoints.

`fit_classifier` looks at which backbone layers the model's mode left
trainable. Transfer (none) and scratch (all) train in one phase. Fine-tuning
trains in two: first the heads alone with the backbone frozen, then the
layers from ``trainable_from`` on as well, at a smaller learning rate. The
best model (by validation loss) is saved as ``best.keras`` through a
temporary file, and the history of both phases goes to ``history.csv``. With
an output folder the run survives a kill (`bagnet_keras.transfer.resume`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping

import keras
import numpy as np

from bagnet_keras.core.commit import atomic_target, check_arguments
from bagnet_keras.core.graph import output_names
from bagnet_keras.core.inputs import check_image_size
from bagnet_keras.transfer.heads import head_layers
from bagnet_keras.transfer.onednn import warn_if_onednn_crash_risk
from bagnet_keras.transfer.resume import EpochBackup, ResumableEarlyStopping, model_signature, read_arrays


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save(path)`` through a temporary file in the same folder, renamed only once complete.

    Examples
    --------
    >>> save_model(model, "runs/streets/best.keras")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"Save whole models as .keras files. Received: {path!r}")
    with atomic_target(path) as tmp:
        model.save(tmp)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch (``epoch 3/30 (train) 4.1 s: loss 0.93, accuracy 0.58, ...``), for logs and CI.

    Keras' own ``verbose=2`` spends two lines an epoch; its progress bar
    (``verbose=1``) redraws once per step, thousands of lines in a file.
    """

    def __init__(self, epochs: int, phase: str):
        super().__init__()
        self.epochs, self.phase = epochs, phase

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items() if np.ndim(v) == 0)
        print(
            f"epoch {epoch + 1}/{self.epochs} ({self.phase}) {time.monotonic() - self._start:.1f} s: {values}",
            flush=True,
        )


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, atomically: a crash mid-write keeps the last good file.

    Examples
    --------
    >>> model.fit(data, epochs=5, callbacks=[BestCheckpoint("runs/best.keras")])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", mode: str = "min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max'. Received: mode={mode!r}")
        self.path, self.monitor, self.mode = os.fspath(path), monitor, mode
        self.best = np.inf if mode == "min" else -np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"BestCheckpoint monitors {self.monitor!r}, which training does not log: {sorted(logs or {})}"
            )
        if (value < self.best) if self.mode == "min" else (value > self.best):
            self.best = float(value)
            save_model(self.model, self.path)


def _targets_as_dict(model: keras.Model, dataset, heads: list[str]):
    """Make every element ``(x, {head: y})``; a single-head dataset may give plain labels."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"The dataset must yield (images, labels) pairs. Its elements are {spec}.")
    check_image_size(model, spec[0].shape)
    if isinstance(spec[1], Mapping):
        missing = [h for h in heads if h not in spec[1]]
        if missing:
            raise ValueError(f"The dataset's targets {sorted(spec[1])} lack the heads {missing} of the model.")
        return dataset
    if len(heads) != 1:
        raise ValueError(f"The model has heads {heads}; the dataset must yield a dict of labels for them.")
    return dataset.map(lambda x, y: (x, {heads[0]: y}))


def balanced_class_weights(dataset, n_classes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Per head, ``n / (k * count)`` for each class (scikit-learn's "balanced"); unseen classes get 0."""
    counts = {head: np.zeros(k) for head, k in n_classes.items()}
    for _, targets in dataset.as_numpy_iterator():
        for head in counts:
            counts[head] += np.bincount(np.ravel(targets[head]).astype(int), minlength=n_classes[head])
    weights = {}
    for head, count in counts.items():
        seen = count > 0
        weights[head] = np.where(seen, count.sum() / (seen.sum() * np.maximum(count, 1)), 0.0).astype("float32")
    return weights


def _with_sample_weights(dataset, weights: dict[str, np.ndarray]):
    import tensorflow as tf

    tables = {head: tf.constant(w) for head, w in weights.items()}
    return dataset.map(
        lambda x, y: (x, y, {head: tf.gather(tables[head], tf.cast(y[head], "int64")) for head in tables})
    )


def _is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process writes the run's files: the ``chief`` task, or worker 0 in a cluster without one.

    Examples
    --------
    >>> import tensorflow as tf
    >>> is_chief(tf.distribute.get_strategy())
    True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def _fit_multi_worker(model, strategy, train, validation, start: int, end: int, callbacks: list) -> int:
    """Keras' epoch loop with its own train and test steps, run by every worker; returns the epochs run.

    Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585: it reduces the
    input batch and the per-step logs across workers with a MEAN along an axis that scalars lack). The steps
    are the model's own ``train_step`` / ``test_step``, so losses, sample weights and metrics are the same;
    the optimizer sums the gradients of all workers, and the metrics are read outside the replicas, which
    aggregates them over all workers, so every worker sees the same logs and takes the same decisions
    (early stopping). BatchNorm's moving statistics follow each worker's own batches (Keras updates them
    locally); they are averaged over the workers after every epoch, so all end with the same weights.
    """
    import tensorflow as tf

    with strategy.scope():
        # What fit does before its first step: create the optimizer's and metrics' variables from a batch's shapes.
        model._symbolic_build(data_batch=next(iter(train)))
    train_step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)))
    test_step = tf.function(lambda batch: strategy.run(model.test_step, args=(batch,)))
    distributed = strategy.experimental_distribute_dataset(train)
    validation = strategy.experimental_distribute_dataset(validation) if validation is not None else None
    statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    @tf.function
    def average():
        local = [tf.identity(v.value) for v in statistics]
        return tf.distribute.get_replica_context().all_reduce("MEAN", local)

    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    epochs = 0
    for epoch in range(start, end):
        hooks.on_epoch_begin(epoch)
        model.reset_metrics()
        for batch in distributed:
            train_step(batch)
        if statistics:
            mean = strategy.run(average)
            for variable, value in zip(statistics, strategy.experimental_local_results(mean)[0], strict=True):
                variable.assign(value)
        logs = {name: float(value) for name, value in model.get_metrics_result().items()}
        if validation is not None:
            model.reset_metrics()
            for batch in validation:
                test_step(batch)
            logs.update({f"val_{name}": float(value) for name, value in model.get_metrics_result().items()})
        hooks.on_epoch_end(epoch, logs)
        epochs += 1
        if model.stop_training:
            break
    hooks.on_train_end()
    return epochs


def fit_classifier(
    model: keras.Model,
    train,
    validation=None,
    epochs: int = 10,
    head_epochs: int = 5,
    learning_rate: float = 1e-3,
    finetune_learning_rate: float = 1e-5,
    class_weight: str | Mapping[str, np.ndarray] | None = "balanced",
    patience: int | None = 3,
    output_dir: str | os.PathLike | None = None,
    seed: int | None = 0,
    strategy=None,
    verbose: int | str = "auto",
    jit_compile: bool | str = "auto",
) -> dict[str, list]:
    """Compile and train a `bagnet_keras.transfer.heads.build_classifier` model.

    Parameters
    ----------
    model : keras.Model
    train, validation : tf.data.Dataset
        Batches of ``(images, labels)``, labels a dict by head name (see
        `bagnet_keras.transfer.labels.with_heads`) or plain labels for one head;
        images preprocessed for the backbone.
    epochs : int
        Epochs of the main phase (the only phase for transfer and scratch,
        the fine-tuning phase for finetune).
    head_epochs : int
        Fine-tuning only: epochs training the heads alone first.
    learning_rate, finetune_learning_rate : float
        Adam learning rates of the head (or only) phase and of the fine-tuning phase.
    class_weight : "balanced", None or mapping head -> weights per class
        Weights each sample by its class in every head's loss.
    patience : int or None
        Early stopping on validation loss (training loss without validation);
        the best weights are restored at the end of each phase.
    output_dir : path, optional
        Where ``best.keras`` (atomic) and ``history.csv`` go, with ``run.json`` (the arguments) and
        ``backup/`` (the state after the last finished epoch). Called again with the same folder and
        arguments, training resumes from that epoch, optimizer state included (a finished run is not
        repeated: its final weights are restored); other arguments raise ValueError. Nothing else is
        written.
    seed : int or None
        Seeds Python, NumPy and TensorFlow (`keras.utils.set_random_seed`).
    strategy : tf.distribute.Strategy, optional
        The strategy the model was built under. With ``MultiWorkerMirroredStrategy`` (several
        processes or machines, each running this same call with its own ``TF_CONFIG``) every worker
        trains on its share of ``train`` with the gradients summed over all; only the chief
        (`is_chief`) writes in ``output_dir``, which must then be a folder that every worker sees
        (a shared file system), so that a restarted run resumes every worker from the same epoch.
    jit_compile : bool or "auto"
        Keras' ``compile`` option: XLA for the training steps; ``"auto"`` uses it on GPUs. Mixed
        precision is the model's own: `bagnet_keras.transfer.heads.build_classifier`'s ``dtype_policy``.
    verbose : int or "auto"
        Keras' ``fit`` verbosity. ``"auto"``: Keras' per-step progress bar
        on a terminal, one line per epoch otherwise (`EpochLine`), so logs
        stay short.

    Returns
    -------
    dict
        The history of both phases (lists by metric) and ``"phase"``.

    Warns
    -----
    OneDNNCrashWarning
        Before training, when the model has trainable 1x1 strided convolutions
        that TensorFlow's oneDNN kernels on this CPU are known to crash on
        (`bagnet_keras.transfer.onednn`); the warning names them and the workarounds.

    Examples
    --------
    >>> model = build_classifier("bagnet33", {"city": 10}, mode="finetune")  # doctest: +SKIP
    >>> history = fit_classifier(model, train, val, epochs=10, output_dir="runs/bagnet33")  # doctest: +SKIP
    """
    for value, name in ((epochs, "epochs"), (head_epochs, "head_epochs")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative integer. Received: {name}={value!r}")
    epoch_lines = verbose == "auto" and not sys.stdout.isatty()
    if verbose == "auto":
        verbose = 0 if epoch_lines else 1
    # Before any training step: a crash there would kill the process without a traceback.
    warn_if_onednn_crash_risk(model)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    heads = output_names(model)
    n_classes = {head: int(t.shape[-1]) for head, t in zip(heads, model.outputs, strict=True)}
    train = _targets_as_dict(model, train, heads)
    if validation is not None:
        validation = _targets_as_dict(model, validation, heads)
    if class_weight == "balanced":
        class_weight = balanced_class_weights(train, n_classes)
    if class_weight is not None:
        train = _with_sample_weights(train, {h: np.asarray(class_weight[h], "float32") for h in heads})
    monitor = "val_loss" if validation is not None else "loss"
    backbone = [layer for layer in model.layers if layer.name not in head_layers(model) and layer.weights]
    trainable = {layer.name: layer.trainable for layer in backbone}
    finetune = any(trainable.values()) and not all(trainable.values())
    phases = [("heads", head_epochs, learning_rate), ("finetune", epochs, finetune_learning_rate)]
    if not finetune:
        phases = [("train", epochs, learning_rate)]
    checkpoint = None
    multi_worker = _is_multi_worker(strategy)
    writer = not multi_worker or is_chief(strategy)
    if output_dir is not None:
        output_dir = os.fspath(output_dir)
    if output_dir is not None and writer:
        os.makedirs(output_dir, exist_ok=True)
        weights_of = {h: np.asarray(class_weight[h]).tolist() for h in heads} if class_weight is not None else None
        check_arguments(
            output_dir,
            dict(
                epochs=epochs,
                head_epochs=head_epochs if finetune else None,
                learning_rate=learning_rate,
                finetune_learning_rate=finetune_learning_rate if finetune else None,
                class_weight=weights_of,
                patience=patience,
                seed=seed,
                model=model_signature(model),
                data=str(train.element_spec),
            ),
        )
        checkpoint = BestCheckpoint(os.path.join(output_dir, "best.keras"), monitor=monitor)
    backup = EpochBackup(output_dir, write=writer)
    state = backup.load()
    if state is not None and state.get("best") is not None and checkpoint is not None:
        checkpoint.best = state["best"]
    resumed = [phase for phase, _, _ in phases].index(state["phase"]) if state is not None else -1
    done = 0  # epochs before the phase, as Keras counts them (both phases share one count)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    for index, (phase, phase_epochs, rate) in enumerate(phases):
        for layer in backbone:
            layer.trainable = trainable[layer.name] and phase != "heads"
        if index < resumed:
            continue
        if index == resumed and state["complete"]:  # the weights this phase left, for the next one
            model.set_weights(read_arrays(os.path.join(backup.folder, state["weights"])))
            done = state["epoch"]
            continue
        if phase_epochs == 0:
            continue
        start, end = done, done + phase_epochs
        if index == resumed:
            done, start = state["start"], state["epoch"]
            end = start if state["stopped"] else done + phase_epochs
        callbacks = [checkpoint] if checkpoint is not None else []
        early = None
        if patience is not None:
            early = ResumableEarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
            callbacks.append(early)
        if epoch_lines:
            callbacks.append(EpochLine(done + phase_epochs, phase))
        backup.start_phase(phase, done, checkpoint, early)
        callbacks.append(backup)
        with scope:
            model.compile(
                optimizer=keras.optimizers.Adam(rate),
                loss={h: "sparse_categorical_crossentropy" for h in heads},
                metrics={h: ["accuracy"] for h in heads},
                jit_compile=jit_compile,
            )
        if index == resumed:
            # The epoch state of a killed run: weights and the optimizer's moments and step count.
            model.optimizer.build(model.trainable_variables)
            model.load_weights(os.path.join(backup.folder, state["weights"]))
            if early is not None and state.get("early"):
                carried = dict(state["early"])
                if carried.get("file"):
                    carried["weights"] = read_arrays(os.path.join(backup.folder, carried["file"]))
                early.carried = carried
        if multi_worker:
            done = start + _fit_multi_worker(model, strategy, train, validation, start, end, callbacks)
        else:
            result = model.fit(
                train,
                validation_data=validation,
                epochs=end,
                initial_epoch=start,
                callbacks=callbacks,
                shuffle=False,  # a tf.data pipeline shuffles itself (data_tools.loader does)
                verbose=verbose,
            )
            done = start + len(result.epoch)
        backup.complete_phase(done)
    history = backup.history
    for layer in backbone:
        layer.trainable = trainable[layer.name]
    return history
