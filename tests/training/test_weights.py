"""Weight sources, each with files the test creates: torchvision's ImageNet checkpoint cache, a
state-dict file (fitting and mismatched), and models logged to a real MLflow store (runs:/, models:/).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import torch
from torchvision import models as tvm

from exptrack.errors import UserError
from exptrack.training import backbones, weights

NAME = "mobilenet_v3_small"  # the smallest registered backbone: 2.5M parameters


def same_weights(model: torch.nn.Module, expected: torch.nn.Module) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in expected.state_dict().items())


def backbone_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if k.startswith("features."))


def test_imagenet_weights_load_from_the_torch_home_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real checkpoint file where torchvision looks before downloading: its loading code runs offline
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tvm.get_model_weights(NAME).DEFAULT
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    checkpoint.parent.mkdir(parents=True)
    state = tvm.get_model(NAME, weights=None).state_dict()
    torch.save(state, checkpoint)
    built = backbones.build_model(NAME, "imagenet", num_classes=3, freeze_depth=0, image_size=32)
    assert built.weights_source == f"imagenet:{weights}"
    assert backbone_equal(built.model, state)
    assert built.model.classifier[-1].out_features == 3  # the 1000-class head was replaced


def test_imagenet_vit_weights_fit_a_small_image_size_by_resampling_positions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tvm.get_model_weights("vit_b_16").DEFAULT
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / Path(weights.url).name
    checkpoint.parent.mkdir(parents=True)
    state = tvm.get_model("vit_b_16", weights=None).state_dict()  # 224 px: 14 x 14 + 1 positions
    torch.save(state, checkpoint)
    built = backbones.build_model("vit_b_16", "imagenet", num_classes=2, freeze_depth=0, image_size=32)
    assert built.weights_source.startswith("imagenet:")
    loaded = built.model.state_dict()
    assert loaded["encoder.pos_embedding"].shape == (1, 2 * 2 + 1, 768)
    assert torch.equal(loaded["conv_proj.weight"], state["conv_proj.weight"])
    with torch.no_grad():
        assert built.model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def test_a_state_dict_file_with_the_new_head_loads_whole(tmp_path: Path) -> None:
    trained = backbones.build_model(NAME, "none", 3, 0, image_size=32).model
    path = tmp_path / "trained.pt"
    torch.save(trained.state_dict(), path)
    built = backbones.build_model(NAME, str(path), 3, 0, image_size=32)
    assert built.weights_source == str(path)
    assert same_weights(built.model, trained)
    # for another class count the backbone loads and the head starts afresh
    other = backbones.build_model(NAME, str(path), 5, 0, image_size=32).model
    assert backbone_equal(other, trained.state_dict()) and other.classifier[-1].out_features == 5


def test_a_mismatched_or_unreadable_file_is_a_one_line_error_naming_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(tvm.get_model("resnet18", weights=None).state_dict(), path)
    with pytest.raises(UserError) as info:
        backbones.build_model(NAME, str(path), 3, 0, image_size=32)
    message = str(info.value)
    assert "do not fit this backbone: 242 missing (classifier.0.bias, classifier.0.weight, " in message
    assert "122 unexpected (bn1.bias, " in message and "\n" not in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt could not be read"):
        backbones.build_model(NAME, str(tmp_path / "junk.pt"), 3, 0, image_size=32)
    with pytest.raises(UserError, match="no such file"):
        backbones.build_model(NAME, str(tmp_path / "absent.pt"), 3, 0, image_size=32)


def test_mlflow_runs_and_models_uris_give_back_the_logged_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = backbones.build_model(NAME, "none", 4, 0, image_size=32).model
    mlflow.set_tracking_uri(store)
    with mlflow.start_run() as run:  # as `exp train` logs its model: MLflow 3's default pt2 format
        example = torch.zeros(2, 3, 32, 32).numpy()
        mlflow.pytorch.log_model(
            trained.eval(), name="model", input_example=example, pip_requirements=["torch"]
        )
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "tiny-net").version
    mlflow.set_tracking_uri(None)

    from exptrack.tracking import logged_models

    # what exp search and exp train do: runs:/ and models:/ now resolve against this store
    weights.use_resolvers(logged_models.weight_resolvers(store))
    for uri in (f"runs:/{run.info.run_id}/model", f"models:/tiny-net/{version}"):
        built = backbones.build_model(NAME, uri, 4, 0, image_size=32)
        assert built.weights_source == uri
        assert same_weights(built.model, trained)
    with pytest.raises(UserError, match="MLflow could not load this model"):
        backbones.build_model(NAME, "models:/no-such-model/1", 4, 0, image_size=32)


def test_an_unregistered_uri_scheme_says_what_is_accepted() -> None:
    with pytest.raises(UserError, match="no resolver for this URI scheme"):
        weights.resolve("s3://bucket/model.pt")
    assert weights.scheme_of("C:/models/net.pt") is None  # a Windows path stays a path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A checkpoint served over HTTP on loopback, named as torchvision names them (`-<sha256 prefix>.`)."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    payload = bytes(range(256)) * 8192  # 2 MiB: two chunks of the download loop
    name = f"net-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / name).write_bytes(payload)
    (tmp_path / "www" / "bad-0123abcd.pth").write_bytes(payload)  # its name promises another hash

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # the request log is noise here
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=tmp_path / "www"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{name}", payload
    server.shutdown()
    server.server_close()


def test_a_weight_download_shows_its_progress_and_keeps_only_a_whole_file(
    served: tuple[str, bytes], tmp_path: Path
) -> None:
    from tests.progress_recorder import recording

    url, payload = served
    target = tmp_path / "cache" / url.rsplit("/", 1)[1]
    with recording() as tasks:
        weights.download(url, target, "net ImageNet weights")
    assert target.read_bytes() == payload
    (task,) = tasks
    assert task.description == "downloading net ImageNet weights (MB)" and task.total == 2.0
    assert sum(task.steps) == 2.0 and len(task.steps) == 2
    corrupt = tmp_path / "cache" / "bad-0123abcd.pth"
    with pytest.raises(ValueError, match="arrived corrupted"):
        weights.download(url.rsplit("/", 1)[0] + "/bad-0123abcd.pth", corrupt, "bad")
    assert sorted(p.name for p in corrupt.parent.iterdir()) == [target.name]  # nothing half-written
