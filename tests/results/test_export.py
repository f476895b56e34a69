"""Export -> YAML -> `exp train`: the best trial's config comes back equal and reproduces its metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from exptrack import config as cfg
from exptrack.config import TrialConfig
from exptrack.results import export, tables
from tests.conftest import run_exp
from tests.fixtures_search import STUDY, Searched

# Same config, seed and torch thread count on CPU give bit-identical metrics (seen here every
# time); the tolerance only absorbs float formatting, far below one validation sample (1/19).
TOLERANCE = 1e-9


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    return study.best_trial


@pytest.mark.slow
def test_export_writes_the_best_trials_as_yaml_that_reads_back_as_their_configs(searched: Searched) -> None:
    exported = searched.exp("export", STUDY, "--top", "2", "--out", "best")
    assert exported.returncode == 0, exported.stderr
    study = searched.study()
    ranked = sorted(study.trials, key=lambda t: t.value, reverse=True)[:2]
    files = sorted((searched.cwd / "best").glob("*.yaml"))
    assert [f.name for f in files] == sorted(f"trial-{t.number:03d}.yaml" for t in ranked)
    for trial in ranked:
        config, provenance = cfg.read_yaml(searched.cwd / "best" / f"trial-{trial.number:03d}.yaml")
        assert config == cfg.from_dict(trial.user_attrs["config"])
        assert config.lr == trial.params["lr"] and config.epochs == 1 and config.weights == "none"
        assert provenance["study"] == STUDY and provenance["trial"] == trial.number
        assert provenance["value"] == trial.value and provenance["seed"] == config.seed
        assert provenance["mlflow_run_id"] == trial.user_attrs["mlflow_run_id"]
        # ran offline: the config is what trained (weights: none), with a note of what was asked for
        assert provenance["weights_requested"] == "imagenet"
        assert set(provenance["versions"]) == {
            "python",
            "exptrack",
            "torch",
            "torchvision",
            "optuna",
            "mlflow",
        }
        # inactive conditional parameters are absent, not blank
        expected = {"focal": {"gamma"}, "label_smoothing": {"smoothing"}}.get(config.loss, set())
        assert set(config.loss_params) == expected

    printed = searched.exp("export", STUDY, "--out", "-")
    assert printed.returncode == 0, printed.stderr
    data = yaml.safe_load(printed.stdout)
    assert data.pop("provenance")["trial"] == ranked[0].number
    assert cfg.from_dict(data) == cfg.from_dict(ranked[0].user_attrs["config"])


@pytest.mark.slow
def test_train_reproduces_the_exported_trials_metric_and_registers_the_model(searched: Searched) -> None:
    trial = best_trial(searched.study())
    path = searched.cwd / "repro" / f"trial-{trial.number:03d}.yaml"
    config = cfg.from_dict(trial.user_attrs["config"])
    (written,) = export.write(export.export_trials(searched.study(), top=1), path.parent)  # as `exp export`
    assert written == path

    trained = searched.exp("train", str(path), "--register", "digits-best")
    assert trained.returncode == 0, trained.stderr
    run_id = re.search(r"MLflow run (\w+)", trained.stdout)[1]  # type: ignore[index]
    client = MlflowClient(f"sqlite:///{searched.cwd / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert abs(run.data.metrics["val_accuracy"] - trial.value) <= TOLERANCE  # the last epoch's
    assert "val_accuracy: trial" in trained.stdout
    assert run.info.status == "FINISHED" and run.info.run_name == f"train-trial-{trial.number:03d}"
    assert run.data.tags["exptrack.reproduces"] == f"{STUDY}/trial-{trial.number:03d}"
    assert run.data.tags["exptrack.source_run_id"] == trial.user_attrs["mlflow_run_id"]
    assert run.data.params["lr"] == str(config.lr) and "mlflow.parentRunId" not in run.data.tags
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1]
    assert run.inputs.dataset_inputs[0].dataset.name == "digits"
    # the held-out test split: scored once at the end, printed and logged beside the val figures
    assert re.search(
        r"test split \(96 images the search never saw\): test_accuracy=[01]\.\d{4}, test_loss=", trained.stdout
    )
    assert 0 <= run.data.metrics["test_accuracy"] <= 1 and run.data.metrics["test_loss"] > 0
    assert [m.step for m in client.get_metric_history(run_id, "test_accuracy")] == [1]
    assert json.loads(run.inputs.dataset_inputs[0].dataset.profile)["test_samples"] == 96
    (version,) = client.search_model_versions("name = 'digits-best'")
    assert version.run_id == run_id and version.status == "READY"
    assert f"runs:/{run_id}/model" in trained.stdout

    # the re-run's model seeds the next fine-tuning: --set weights=runs:/ID/model or models:/NAME/1
    import mlflow.models
    import mlflow.pytorch
    import torch

    from exptrack.tracking import logged_models
    from exptrack.training import backbones, weights

    store = f"sqlite:///{searched.cwd / 'mlflow.db'}"
    weights.use_resolvers(logged_models.weight_resolvers(store))
    mlflow.set_tracking_uri(store)
    try:
        logged = mlflow.pytorch.load_model(f"runs:/{run_id}/model", map_location="cpu").state_dict()
        info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)

    # the model carries its signature and an input example: two validation images as it takes them
    def tensor(*shape: int) -> list[dict]:
        return [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": list(shape)}}]

    # (as stored: MLmodel's JSON, where MLflow's in-memory dicts hold tuples)
    assert json.loads(info.signature.inputs.to_json()) == tensor(-1, 3, 16, 16)  # images as it takes them
    assert json.loads(info.signature.outputs.to_json()) == tensor(-1, 10)  # one logit per digit
    assert info.saved_input_example_info["type"] == "ndarray"
    for uri in (f"runs:/{run_id}/model", "models:/digits-best/1"):
        built = backbones.build_model(config.backbone, uri, 10, 0, image_size=config.image_size)
        assert built.weights_source == uri
        assert all(torch.equal(v, logged[k]) for k, v in built.model.state_dict().items())


@pytest.mark.slow
def test_export_of_a_study_without_a_complete_trial_is_a_one_line_error(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    result = run_exp(tmp_path, "export", "empty")
    assert result.returncode == 2
    assert result.stderr.startswith("error: study 'empty' has no complete trial to export")
    assert "Traceback" not in result.stderr and not (tmp_path / "best").exists()


def test_train_overrides_apply_on_top_of_the_file(tmp_path: Path) -> None:
    from exptrack.results.train_run import load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        cfg.dump_yaml(TrialConfig(epochs=3, loss="focal", loss_params={"gamma": 2.0}), {"trial": 4})
    )
    config, provenance = load_config(path, ["epochs=1", "loss_params.gamma=1.5"])
    assert config == TrialConfig(epochs=1, loss="focal", loss_params={"gamma": 1.5})
    assert provenance == {"trial": 4}


def test_a_multi_objective_study_exports_its_pareto_set(tmp_path: Path) -> None:
    study = optuna.create_study(
        study_name="two", storage=f"sqlite:///{tmp_path / 'optuna.db'}", directions=["maximize", "minimize"]
    )
    for i, values in enumerate([(0.9, 2.0), (0.8, 1.0), (0.7, 3.0)]):  # trial 2 is dominated by 0
        trial = study.ask()
        trial.set_user_attr("config", TrialConfig(lr=10.0 ** -(i + 2)).to_dict())
        study.tell(trial, values)
    items = export.export_trials(study, top=None)
    assert [item.trial.number for item in items] == [0, 1]
    assert items[1].provenance["value"] == [0.8, 1.0]
    paths = export.write(items, tmp_path / "best")
    assert [cfg.read_yaml(p)[0].lr for p in paths] == [1e-2, 1e-3]
    frame = tables.trials_frame(study, [])
    assert list(frame.columns[:4]) == ["number", "state", "value_0", "value_1"]
    assert list(tables.select(frame, study)["number"]) == [0, 1, 2]


POLY1_STUDY = '''"""A study that registers its own loss: Poly-1 (Leng et al. 2022), cross entropy + eps * (1 - p_true)."""
from torch import nn
from torch.nn import functional as F

from exptrack import Study
from exptrack.training.losses import register_loss


class Poly1(nn.Module):
    def __init__(self, epsilon: float) -> None:
        super().__init__()
        self.epsilon = epsilon

    def forward(self, logits, target):
        logits = logits.float()
        p_true = F.softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        return (F.cross_entropy(logits, target, reduction="none") + self.epsilon * (1 - p_true)).mean()


@register_loss("poly1")
def poly1(epsilon: float = 1.0) -> nn.Module:
    return Poly1(epsilon)


study = Study(name="poly", search_space="poly.yaml", dashboard=None)
'''


@pytest.mark.slow
def test_a_loss_registered_in_the_study_file_is_reproduced_by_exp_train(tmp_path: Path) -> None:
    """`exp export` records the study file that registers `poly1`; `exp train` loads it first,
    from another directory, and re-runs the trial to the same metric."""
    from tests.conftest import TINY

    searched, elsewhere = tmp_path / "own", tmp_path / "elsewhere"
    searched.mkdir(), elsewhere.mkdir()
    (searched / "poly.py").write_text(POLY1_STUDY)
    (searched / "poly.yaml").write_text("loss:\n  choice:\n    poly1: {epsilon: {float: [0.5, 2.0]}}\n")
    done = run_exp(searched, "search", "poly.py", "--trials", "1", *TINY)
    assert done.returncode == 0, done.stderr
    exported = run_exp(searched, "export", "poly", "--out", str(elsewhere / "best"))
    assert exported.returncode == 0, exported.stderr
    (path,) = (elsewhere / "best").glob("*.yaml")
    written = yaml.safe_load(path.read_text())
    assert written["loss"] == "poly1" and written["provenance"]["study_file"] == str(searched / "poly.py")
    trained = run_exp(elsewhere, "train", f"best/{path.name}")
    assert trained.returncode == 0, trained.stderr
    assert "(identical)" in trained.stdout, trained.stdout
    (searched / "poly.py").rename(searched / "moved.py")  # the study file gone: one line says why
    lost = run_exp(elsewhere, "train", f"best/{path.name}")
    assert lost.returncode == 2
    assert f"study file {searched / 'poly.py'} (provenance) is not there" in lost.stderr
    assert "unknown loss 'poly1'" in lost.stderr
