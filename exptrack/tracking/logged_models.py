"""Models in MLflow: logging a trained model on a run (`runs:/<id>/model`), registering a version,
and loading one back as a state dict for `--set weights=runs:/...` or `models:/NAME/VERSION`.

torch is never imported here (only training/ does): MLflow's `mlflow.pytorch` handles the model,
and the caller passes the example's arrays (`training.devices.example_arrays`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any

from exptrack import records
from exptrack.config_values import check_text
from exptrack.errors import UserError, first_line, redact
from exptrack.tracking.tracker import Tracker

WEIGHT_SCHEMES = ("runs", "models")  # the weight URIs MLflow resolves


def weight_resolvers(tracking_uri: str) -> dict[str, Callable[[str], Mapping[str, Any]]]:
    """`runs:/` and `models:/` weight resolvers bound to this tracking store, for
    `training.weights.use_resolvers` (training itself never imports MLflow)."""
    load = functools.partial(load_state_dict, store=tracking_uri)
    return dict.fromkeys(WEIGHT_SCHEMES, load)


def load_state_dict(uri: str, store: str) -> dict[str, Any]:
    """The state dict of a model logged with `mlflow.pytorch.log_model` (as `exp train` does)."""
    import mlflow.pytorch

    try:
        with _fluent_stores(store):  # load_model resolves runs:/ and models:/ through the fluent URIs
            model = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as exc:
        raise UserError(
            f"weights={uri}: MLflow could not load this model ({first_line(exc, 150)}); "
            f"check the URI and the store ({redact(store)}, set by --tracking-uri / MLFLOW_TRACKING_URI)"
        ) from exc
    return dict(model.state_dict())


def check_model_name(name: str | None) -> None:
    """`--register NAME` as MLflow's registry takes it, checked before training (not after)."""
    if name is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name  # MLflow's own rule: no `/` or `:`

    check_text(name, "--register")
    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise UserError(f"--register {name!r}: {first_line(exc)}") from exc


def log_model(
    tracker: Tracker,
    experiment_id: str,
    run_id: str,
    model: Any,
    register: str | None,
    example: tuple[Any, Any] | None = None,
) -> tuple[str, str | None]:
    """Log the torch model under the run (`runs:/<id>/model`), with `example` (inputs as the model
    takes them and its outputs for them, numpy arrays) as its input example and the signature read
    from them; register a version when asked. Returns (model URI, "NAME version N" or None)."""
    import mlflow
    from mlflow.models import infer_signature

    # pickle is chosen on purpose (below) and `runs:/` resolves to the logged model: quiet both notes
    for logger in ("mlflow.pytorch", "mlflow.tracking._model_registry.fluent"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    # Pinned requirements skip MLflow's inference, which re-imports the model in a subprocess (~10 s).
    requirements = [f"{name}=={metadata.version(name).split('+')[0]}" for name in ("torch", "torchvision")]
    model = model.cpu().eval()
    signature, inputs = None, None
    if example is not None:  # the signature from a real forward pass: (-1, 3, H, W) -> (-1, classes)
        inputs, outputs = example
        signature = infer_signature(inputs, outputs)
    # One process, one run: the fluent API is safe here, and log_model resolves its client from it.
    with _fluent_stores(tracker.uri):
        # log_model puts the model in the *current* experiment even with run_id given; registering
        # then looks for it in the run's experiment, so the two must agree.
        mlflow.set_experiment(experiment_id=experiment_id)
        # pickle, not MLflow 3's default pt2: `load_model` gives back the same nn.Module, so its
        # state_dict keys match the backbone's (weights=runs:/... loads them into a new backbone).
        info = mlflow.pytorch.log_model(
            model,
            name=records.MODEL_ARTIFACT,
            run_id=run_id,
            pip_requirements=requirements,
            serialization_format="pickle",
            signature=signature,
            input_example=inputs,
        )
        registered = None
        if register:
            version = mlflow.register_model(f"runs:/{run_id}/{records.MODEL_ARTIFACT}", register)
            registered = f"{version.name} version {version.version}"
    return info.model_uri, registered


@contextlib.contextmanager
def _fluent_stores(store: str) -> Iterator[None]:
    """Point MLflow's fluent tracking and registry URIs at `store` for one call, then put back
    exactly what was there: `mlflow.set_*_uri` also writes MLFLOW_*_URI into the environment,
    which would otherwise pin every later call (and child process) to this store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {key: os.environ.get(key) for key in keys}
    saved = tracking._tracking_uri, registry._registry_uri
    try:
        mlflow.set_tracking_uri(store)
        mlflow.set_registry_uri(store)
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # type: ignore[arg-type]  # None = back to the default
        registry._registry_uri = saved[1]
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
