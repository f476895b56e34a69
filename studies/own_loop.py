"""Your own training loop: a small MLP on the digits' 64 pixel features, in plain PyTorch.

Run: exp search studies/own_loop.py --trials 20
exptrack opens and closes each trial's MLflow run, records its params, prunes (median pruner on
the val_accuracy it reports per epoch), records a raised exception as a FAILED trial with its
traceback, and `exp export` + `exp train` reproduce a trial with this same function. It opts in to
checkpoints (`reporter.checkpoint`, `reporter.resume_state`), so a killed trial's retry resumes.
"""

from __future__ import annotations

import time

import torch
from sklearn.datasets import load_digits
from torch import nn

from exptrack import Study
from exptrack.config import TrialConfig
from exptrack.training import checkpoints
from exptrack.training.objective import Reporter


def train(config: TrialConfig, reporter: Reporter) -> float:
    """One trial: the config's lr, batch_size, epochs, subset and seed, and this study's own
    params (hidden, dropout) from the search space; returns the last epoch's val_accuracy."""
    torch.manual_seed(config.seed)
    (train_x, train_y), (val_x, val_y) = _digits(config.seed, config.subset)
    hidden, dropout = int(config.params["hidden"]), float(config.params["dropout"])
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    reporter.log_figure("trainable_params", sum(p.numel() for p in model.parameters()))
    store = reporter if isinstance(reporter, checkpoints.Store) else None  # a search trial's: it checkpoints
    done = _resume(store, model, optimizer)  # epochs a killed predecessor of this trial trained
    started, val_accuracy = time.perf_counter(), 0.0
    for epoch in range(done + 1, config.epochs + 1):
        train_loss = _train_epoch(model, optimizer, train_x, train_y, config.batch_size)
        val_loss, val_accuracy = _evaluate(model, val_x, val_y)
        reporter.report(epoch, {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy})
        if reporter.should_prune():  # the median pruner says this trial is behind: stop here
            break
        if store is not None and epoch < config.epochs and store.checkpoint_due():
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            store.checkpoint(
                epoch, {"epoch": epoch, **state, "rng": checkpoints.rng_state(torch.device("cpu"))}
            )
    reporter.log_figure("seconds_per_epoch", (time.perf_counter() - started) / max(1, epoch - done))
    return val_accuracy


def _resume(store: checkpoints.Store | None, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """The state a killed predecessor saved (its model, optimizer and random numbers: the batch
    order comes from torch's generator), loaded; the epochs it had trained, or 0."""
    state = store.resume_state() if store is not None else None
    if not state:
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    checkpoints.set_rng_state(state["rng"], torch.device("cpu"))
    return int(state["epoch"])


def _digits(
    seed: int, subset: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """1,797 digits as 64 features in [0, 1], split 80/20 by `seed` (at most `subset` of each)."""
    x, y = load_digits(return_X_y=True)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    features, labels = torch.tensor(x, dtype=torch.float32)[order] / 16.0, torch.tensor(y)[order]
    cut = int(len(labels) * 0.8)
    train, val = slice(0, cut), slice(cut, None)
    limit = subset or len(labels)
    return (features[train][:limit], labels[train][:limit]), (features[val][:limit], labels[val][:limit])


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> float:
    model.train()
    total = 0.0
    for index in torch.randperm(len(y)).split(batch_size):
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(y)


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


study = Study(
    name="own_loop",
    search_space="search_spaces/own_loop.yaml",
    objective=train,  # or "my_module:train": a module beside this file
    metric="val_accuracy",
    direction="maximize",
    fixed={"epochs": 10, "batch_size": 64},
    pruner="median",
)
