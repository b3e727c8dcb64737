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
from dataclasses import dataclass
from typing import NamedTuple

import keras
import numpy as np

from bagnet_keras.core.backend import require_tensorflow
from bagnet_keras.core.commit import atomic_target, check_arguments
from bagnet_keras.core.graph import build_training_state, output_names
from bagnet_keras.core.inputs import check_image_size
from bagnet_keras.core.validation import check_int, check_number
from bagnet_keras.transfer.heads import backbone_units
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


class _WorkerSteps:
    """The distributed train and test steps of `_fit_multi_worker`, and the epoch they make up."""

    def __init__(self, model: keras.Model, strategy, train, validation):
        import tensorflow as tf

        with strategy.scope():
            build_training_state(model, train.element_spec)
        self.model, self.strategy = model, strategy
        self.train_step = tf.function(lambda batch: strategy.run(model.train_step, args=(batch,)))
        self.test_step = tf.function(lambda batch: strategy.run(model.test_step, args=(batch,)))
        self.train = strategy.experimental_distribute_dataset(train)
        self.validation = strategy.experimental_distribute_dataset(validation) if validation is not None else None
        self.statistics = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

        @tf.function
        def average():
            local = [tf.identity(v.value) for v in self.statistics]
            return tf.distribute.get_replica_context().all_reduce("MEAN", local)

        self.average = average

    def epoch(self) -> dict[str, float]:
        """Train on every batch, average BatchNorm's statistics over the workers, validate; the epoch's logs."""
        self.model.reset_metrics()
        for batch in self.train:
            self.train_step(batch)
        if self.statistics:
            mean = self.strategy.run(self.average)
            for variable, value in zip(self.statistics, self.strategy.experimental_local_results(mean)[0], strict=True):
                variable.assign(value)
        logs = self._metrics()
        if self.validation is not None:
            self.model.reset_metrics()
            for batch in self.validation:
                self.test_step(batch)
            logs.update({f"val_{name}": value for name, value in self._metrics().items()})
        return logs

    def _metrics(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.model.get_metrics_result().items()}


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
    steps = _WorkerSteps(model, strategy, train, validation)
    hooks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    hooks.on_train_begin()
    epochs = 0
    for epoch in range(start, end):
        hooks.on_epoch_begin(epoch)
        hooks.on_epoch_end(epoch, steps.epoch())
        epochs += 1
        if model.stop_training:
            break
    hooks.on_train_end()
    return epochs


class _Phase(NamedTuple):
    name: str  # "heads", "finetune" or "train": recorded in the backup's state, so resumed runs find it
    epochs: int
    learning_rate: float


@dataclass
class _Run:
    """What every phase of one `fit_classifier` call shares."""

    model: keras.Model
    train: object
    validation: object
    heads: list
    backbone: list  # the backbone's layers with weights
    trainable: dict  # id(layer) -> trainable as the model's mode left it
    monitor: str
    patience: int | None
    checkpoint: BestCheckpoint | None
    backup: EpochBackup
    strategy: object
    epoch_lines: bool
    verbose: int | str
    jit_compile: bool | str


def _verbosity(verbose: int | str) -> tuple[int | str, bool]:
    """Keras' ``fit`` verbosity, and whether `EpochLine` prints instead (``"auto"`` off a terminal)."""
    epoch_lines = verbose == "auto" and not sys.stdout.isatty()
    if verbose == "auto":
        verbose = 0 if epoch_lines else 1
    return verbose, epoch_lines


def _plan(model: keras.Model, epochs: int, head_epochs: int, learning_rate, finetune_learning_rate):
    """The backbone's layers with weights, their trainability as the model's mode left it, and the phases.

    Fine-tuning (some backbone layers trainable, not all) trains the heads
    alone first; transfer and scratch train in one phase.
    """
    backbone = [layer for layer in backbone_units(model) if layer.weights]
    trainable = {id(layer): layer.trainable for layer in backbone}
    if any(trainable.values()) and not all(trainable.values()):
        phases = [_Phase("heads", head_epochs, learning_rate), _Phase("finetune", epochs, finetune_learning_rate)]
    else:
        phases = [_Phase("train", epochs, learning_rate)]
    return backbone, trainable, phases


def _prepare_data(model: keras.Model, train, validation, heads: list[str], class_weight):
    """The datasets with labels by head and sample weights, and the class weights as used (or None)."""
    n_classes = {head: int(t.shape[-1]) for head, t in zip(heads, model.outputs, strict=True)}
    train = _targets_as_dict(model, train, heads)
    if validation is not None:
        validation = _targets_as_dict(model, validation, heads)
    if class_weight == "balanced":
        class_weight = balanced_class_weights(train, n_classes)
    if class_weight is not None:
        train = _with_sample_weights(train, {h: np.asarray(class_weight[h], "float32") for h in heads})
    return train, validation, class_weight


def _open_output(output_dir, arguments: dict, monitor: str) -> BestCheckpoint:
    """Check the run's arguments against ``output_dir``'s (refusing another run's) and the checkpoint to keep."""
    os.makedirs(output_dir, exist_ok=True)
    check_arguments(output_dir, arguments)
    return BestCheckpoint(os.path.join(output_dir, "best.keras"), monitor=monitor)


def _phase_callbacks(run: _Run, phase: _Phase, done: int) -> tuple[list, ResumableEarlyStopping | None]:
    """The callbacks of one phase, the backup last (it saves the others' state), and its early stopping."""
    callbacks = [run.checkpoint] if run.checkpoint is not None else []
    early = None
    if run.patience is not None:
        early = ResumableEarlyStopping(monitor=run.monitor, patience=run.patience, restore_best_weights=True)
        callbacks.append(early)
    if run.epoch_lines:
        callbacks.append(EpochLine(done + phase.epochs, phase.name))
    run.backup.start_phase(phase.name, done, run.checkpoint, early)
    callbacks.append(run.backup)
    return callbacks, early


def _compile(run: _Run, learning_rate: float) -> None:
    with run.strategy.scope() if run.strategy is not None else contextlib.nullcontext():
        run.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss={h: "sparse_categorical_crossentropy" for h in run.heads},
            metrics={h: ["accuracy"] for h in run.heads},
            jit_compile=run.jit_compile,
        )


def _restore_epoch(run: _Run, state: dict, early: ResumableEarlyStopping | None) -> None:
    """The epoch state of a killed run: weights, the optimizer's moments and step count, early stopping's state."""
    folder = run.backup.folder
    run.model.optimizer.build(run.model.trainable_variables)
    run.model.load_weights(os.path.join(folder, state["weights"]))
    if early is not None and state.get("early"):
        carried = dict(state["early"])
        if carried.get("file"):
            carried["weights"] = read_arrays(os.path.join(folder, carried["file"]))
        early.carried = carried


def _fit(run: _Run, start: int, end: int, callbacks: list) -> int:
    """Train epochs ``start`` to ``end`` (Keras' count); returns how many ran (early stopping may cut them)."""
    if _is_multi_worker(run.strategy):
        return _fit_multi_worker(run.model, run.strategy, run.train, run.validation, start, end, callbacks)
    # Keras' TensorFlow trainer creates the optimizer's and the metrics' variables inside its first trace of
    # the train step, and TensorFlow then traces the step again without them: built beforehand (from the
    # pipeline's shapes, reading no image), the step is traced once. The other backends' trainers build them
    # first themselves, so there it changes nothing.
    build_training_state(run.model, run.train.element_spec)
    result = run.model.fit(
        run.train,
        validation_data=run.validation,
        epochs=end,
        initial_epoch=start,
        callbacks=callbacks,
        shuffle=False,  # a tf.data pipeline shuffles itself (data_tools.loader does)
        verbose=run.verbose,
    )
    return len(result.epoch)


def _train_phase(run: _Run, phase: _Phase, done: int, state: dict | None) -> int:
    """Run one phase after ``done`` epochs, or resume it from ``state``; returns the epochs done after it."""
    start, end = done, done + phase.epochs
    if state is not None:
        done, start = state["start"], state["epoch"]
        end = start if state["stopped"] else done + phase.epochs
    callbacks, early = _phase_callbacks(run, phase, done)
    _compile(run, phase.learning_rate)
    if state is not None:
        _restore_epoch(run, state, early)
    done = start + _fit(run, start, end, callbacks)
    run.backup.complete_phase(done)
    return done


def _train_phases(run: _Run, phases: list[_Phase]) -> None:
    """The phases in turn, skipping what the committed state (`EpochBackup.load`) says is done.

    Phases before the committed one are done; a complete committed phase
    gives the weights it left, and training continues with the next one; an
    incomplete one resumes at its last committed epoch.
    """
    state = run.backup.load()
    if state is not None and state.get("best") is not None and run.checkpoint is not None:
        run.checkpoint.best = state["best"]
    resumed = [phase.name for phase in phases].index(state["phase"]) if state is not None else -1
    done = 0  # epochs before the phase, as Keras counts them (both phases share one count)
    for index, phase in enumerate(phases):
        for layer in run.backbone:
            layer.trainable = run.trainable[id(layer)] and phase.name != "heads"
        if index < resumed:
            continue
        here = state if index == resumed else None
        if here is not None and here["complete"]:  # the weights this phase left, for the next one
            run.model.set_weights(read_arrays(os.path.join(run.backup.folder, here["weights"])))
            done = here["epoch"]
        elif phase.epochs > 0:
            done = _train_phase(run, phase, done, here)


def _check_dataset(data, name: str) -> None:
    if not hasattr(data, "element_spec"):
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of (images, labels) batches, e.g. "
            f"data_tools.loader.image_dataset(root, split='train'). Received an object of type {type(data).__name__}."
        )


def fit_classifier(
    model: keras.Model,
    train,
    validation=None,
    *,
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
    epochs, head_epochs = check_int(epochs, "epochs", low=0), check_int(head_epochs, "head_epochs", low=0)
    # Checked, not converted: the values as given are the run's recorded arguments.
    check_number(learning_rate, "learning_rate", low=0, low_open=True)
    check_number(finetune_learning_rate, "finetune_learning_rate", low=0, low_open=True)
    _check_dataset(train, "train")
    require_tensorflow("strategy", strategy)
    if validation is not None:
        _check_dataset(validation, "validation")
    check_int(patience, "patience", low=1, allow_none=True)
    check_int(seed, "seed", low=0, allow_none=True)
    verbose, epoch_lines = _verbosity(verbose)
    # Before any training step: a crash there would kill the process without a traceback.
    warn_if_onednn_crash_risk(model)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    heads = output_names(model)
    train, validation, class_weight = _prepare_data(model, train, validation, heads, class_weight)
    monitor = "val_loss" if validation is not None else "loss"
    backbone, trainable, phases = _plan(model, epochs, head_epochs, learning_rate, finetune_learning_rate)
    finetune = len(phases) == 2
    writer = not _is_multi_worker(strategy) or is_chief(strategy)
    output_dir = os.fspath(output_dir) if output_dir is not None else None
    checkpoint = None
    if output_dir is not None and writer:
        arguments = dict(
            epochs=epochs,
            head_epochs=head_epochs if finetune else None,
            learning_rate=learning_rate,
            finetune_learning_rate=finetune_learning_rate if finetune else None,
            class_weight={h: np.asarray(class_weight[h]).tolist() for h in heads} if class_weight is not None else None,
            patience=patience,
            seed=seed,
            model=model_signature(model),
            data=str(train.element_spec),
        )
        checkpoint = _open_output(output_dir, arguments, monitor)
    run = _Run(
        model=model,
        train=train,
        validation=validation,
        heads=heads,
        backbone=backbone,
        trainable=trainable,
        monitor=monitor,
        patience=patience,
        checkpoint=checkpoint,
        backup=EpochBackup(output_dir, write=writer),
        strategy=strategy,
        epoch_lines=epoch_lines,
        verbose=verbose,
        jit_compile=jit_compile,
    )
    _train_phases(run, phases)
    for layer in backbone:
        layer.trainable = trainable[id(layer)]
    return run.backup.history
