"""Where a backbone's starting weights come from: torchvision's ImageNet weights, none, a
state-dict file, or a URI (`scheme:/...`) resolved by a resolver registered for its scheme.

No MLflow here: `runs:/` and `models:/` are enabled by an explicit `use_resolvers` call from the
side that knows the tracking store (the search and `exp train`), bound to that store's URI.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

from exptrack import registry
from exptrack.errors import UserError, first_line
from exptrack.training import progress

RANDOM_FALLBACK = "random (imagenet unavailable)"
_unavailable: set[str] = set()  # ImageNet weights that failed once in this process: don't retry

Resolver = Callable[[str], Mapping[str, torch.Tensor]]  # URI -> state dict
RESOLVERS: dict[str, Resolver] = {}
# `scheme:/...`: two letters at least, so a Windows drive (`C:/...`) stays a path
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torchvision's checkpoint names carry a sha256 prefix

# `@register_resolver(scheme)` on `uri -> state dict` for a scheme of your own; a duplicate is refused.
register_resolver = registry.registrar(RESOLVERS, "weights resolver")


def use_resolvers(resolvers: Mapping[str, Resolver]) -> None:
    """Resolve `scheme:/...` weights with these from now on, replacing earlier ones of the same
    schemes: the caller binds them to its store (MLflow `runs:/` to the search's --tracking-uri)."""
    RESOLVERS.update(resolvers)


def scheme_of(weights: str) -> str | None:
    match = _SCHEME.match(weights)
    return match["scheme"] if match else None


def resolve(uri: str) -> Mapping[str, torch.Tensor]:
    scheme = scheme_of(uri)
    if scheme is None or scheme not in RESOLVERS:
        known = ", ".join(f"{s}:/..." for s in sorted(RESOLVERS)) or "none enabled"
        raise UserError(
            f"weights={uri!r}: no resolver for this URI scheme ({known}); "
            "use imagenet, none, a state-dict file, or runs:/... and models:/... through exp search or exp train"
        )
    return RESOLVERS[scheme](uri)


def imagenet_available(name: str, warn: Callable[[str], None]) -> bool:
    """Whether torchvision's ImageNet weights for `name` can be had: in the cache under
    $TORCH_HOME/hub/checkpoints, or downloaded there now (with a progress bar). Offline: one
    warning line, remembered for this process, so later trials do not try again."""
    if name in _unavailable:
        return False
    url = tvm.get_model_weights(name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    if path.is_file():
        return True
    try:
        download(url, path, f"{name} ImageNet weights")
    except (OSError, ValueError) as exc:
        _unavailable.add(name)
        warn(
            f"ImageNet weights for {name} unavailable ({first_line(exc, 120)}); training from scratch "
            f"(random init). {fine_tune_fix(name)}"
        )
        return False
    return True


def fine_tune_fix(name: str) -> str:
    """How to fine-tune `name` from ImageNet on a machine that cannot download: the checkpoint
    where torch looks for it ($TORCH_HOME), or a weights file of one's own."""
    url = tvm.get_model_weights(name).DEFAULT.url
    where = Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(url).path).name
    return f"To fine-tune, copy {where.name} into {where.parent} (set TORCH_HOME) or --set weights=PATH.pt"


def download(url: str, path: Path, what: str) -> None:
    """`url` to `path` with a progress bar, checked against the sha256 prefix in its file name
    (`resnet18-f37072fd.pth`) as torch.hub does; nothing is left at `path` unless it is whole.
    Ours rather than `torch.hub.download_url_to_file`, whose bar is tqdm's, printed past ours."""
    expected = _HASH_IN_NAME.search(path.name)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with urllib.request.urlopen(url, timeout=30) as reply, partial.open("wb") as sink:
        size = int(reply.headers.get("Content-Length") or 0)
        with progress.task(f"downloading {what} (MB)", size / 2**20 or None) as bar:
            while chunk := reply.read(1 << 20):  # 1 MiB at a time
                sink.write(chunk)
                digest.update(chunk)
                bar.advance(len(chunk) / 2**20)
    if expected and not digest.hexdigest().startswith(expected[1]):
        partial.unlink()
        raise ValueError(f"{url} arrived corrupted (sha256 does not start with {expected[1]})")
    partial.replace(path)


def load_imagenet(model: nn.Module, name: str, warn: Callable[[str], None]) -> str:
    """torchvision's DEFAULT weights from the cache (downloaded first when missing); unavailable
    -> one warning line and random initialisation."""
    weights_enum = tvm.get_model_weights(name).DEFAULT
    if not imagenet_available(name, warn):
        return RANDOM_FALLBACK
    try:
        state = weights_enum.get_state_dict(progress=False, check_hash=True)  # from the cache file
    except (OSError, RuntimeError) as exc:
        _unavailable.add(name)
        warn(
            f"ImageNet weights for {name} unreadable ({first_line(exc, 120)}); training from scratch "
            f"(random init). {fine_tune_fix(name)}"
        )
        return RANDOM_FALLBACK
    if isinstance(model, VisionTransformer) and model.image_size != weights_enum.meta["min_size"][0]:
        # ViT built for another size: resample its position embedding to the new patch grid
        state = interpolate_embeddings(model.image_size, model.patch_size, state)
    model.load_state_dict(state)
    return f"imagenet:{weights_enum}"


def load(model: nn.Module, weights: str, head: str) -> str:
    """`none`, a URI with a registered scheme, or a state-dict file; returns what was loaded."""
    if weights == "none":
        return "none"
    if scheme_of(weights):
        load_state(model, resolve(weights), weights, head)
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(
            f"weights={weights!r}: no such file; use imagenet, none, a state-dict file, runs:/... or models:/..."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"weights file {path} could not be read ({first_line(exc, 120)}); pass a state dict"
        ) from exc
    if not isinstance(state, Mapping):
        raise UserError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    load_state(model, state, str(path), head)
    return str(path)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], label: str, head: str) -> None:
    """Load a state dict whose keys must match the backbone's; a head trained for another class
    count is skipped (the new head stays randomly initialised)."""
    own = model.state_dict()
    is_head = lambda key: key.startswith(head + ".")  # noqa: E731
    state = {k: v for k, v in state.items() if not (is_head(k) and k in own and own[k].shape != v.shape)}
    resized = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    missing = sorted(k for k in set(own) - set(state) if not is_head(k))
    unexpected = sorted(set(state) - set(own))
    problems = [
        _few(what, keys)
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", resized))
        if keys
    ]
    if problems:
        raise UserError(
            f"weights {label} do not fit this backbone: {', '.join(problems)} keys; "
            "pass weights of the same architecture (and image size for ViT)"
        )
    model.load_state_dict(state, strict=False)


def _few(what: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{len(keys)} {what} ({shown})"
