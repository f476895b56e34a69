"""The script a user would write instead of exptrack: Optuna (TPE, median pruner, `study.optimize`)
+ MLflow nested runs + a DataLoader loop fine-tuning torchvision's resnet18 on scikit-learn's digits.

    python benchmarks/baseline_optuna_mlflow.py --trials 50 --epochs 5 --image-size 32

Written the way the Optuna and MLflow docs show it, and on purpose not tuned: fp32, a DataLoader
over CPU tensors copied to the device every step, `loss.item()` every step, MLflow's fluent API
(one parent run, a nested run per trial, per-epoch metrics). The search space is
search_spaces/finetune.yaml's; the data is exptrack's `digits`: the 8x8 images resized to
--image-size, 20 % held out per class (scikit-learn's split, so not the very same images).
The one addition for benchmarks/gpu_study.py: each trial's first training step is stored as the
trial's user attr `first_step_at` (unix seconds), to measure the gap between trials.
"""

from __future__ import annotations

import argparse
import time

import mlflow
import optuna
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import ResNet18_Weights, resnet18


def load_data(image_size: int, subset: int) -> tuple[TensorDataset, TensorDataset]:
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear").repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std
    y = torch.tensor(digits.target)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    if subset:
        x_train, y_train, x_val, y_val = x_train[:subset], y_train[:subset], x_val[:subset], y_val[:subset]
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)


class FocalLoss(nn.Module):
    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        return ((1 - torch.exp(-ce)) ** self.gamma * ce).mean()


def build_model(weights: str, freeze_depth: int) -> nn.Module:
    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if weights == "imagenet" else None)
    model.fc = nn.Linear(model.fc.in_features, 10)
    stages = [nn.ModuleList([model.conv1, model.bn1]), model.layer1, model.layer2, model.layer3, model.layer4]
    for stage in stages[:freeze_depth]:
        for p in stage.parameters():
            p.requires_grad = False
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--subset", type=int, default=0, help="first N train and val images (0 = all)")
    parser.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: in memory)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="baseline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    train_ds, val_ds = load_data(args.image_size, args.subset)
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment(args.experiment)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
        batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256])
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        freeze_depth = trial.suggest_int("freeze_depth", 0, 5)
        loss_name = trial.suggest_categorical("loss", ["cross_entropy", "label_smoothing", "focal"])
        if loss_name == "label_smoothing":
            criterion: nn.Module = nn.CrossEntropyLoss(
                label_smoothing=trial.suggest_float("smoothing", 0.0, 0.3)
            )
        elif loss_name == "focal":
            criterion = FocalLoss(trial.suggest_float("gamma", 0.5, 5.0))
        else:
            criterion = nn.CrossEntropyLoss()

        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            model = build_model(args.weights, freeze_depth).to(device)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            train_loader = DataLoader(train_ds, batch_size=batch_size, shuffle=True)
            val_loader = DataLoader(val_ds, batch_size=256)
            val_acc, first_step = 0.0, True
            for epoch in range(1, args.epochs + 1):
                model.train()
                running_loss = 0.0
                for images, labels in train_loader:
                    if first_step:  # for benchmarks/gpu_study.py: the gap between trials
                        trial.set_user_attr("first_step_at", time.time())
                        first_step = False
                    images, labels = images.to(device), labels.to(device)
                    optimizer.zero_grad()
                    loss = criterion(model(images), labels)
                    loss.backward()
                    optimizer.step()
                    running_loss += loss.item() * len(labels)
                model.eval()
                correct, val_loss = 0, 0.0
                with torch.no_grad():
                    for images, labels in val_loader:
                        images, labels = images.to(device), labels.to(device)
                        outputs = model(images)
                        val_loss += criterion(outputs, labels).item() * len(labels)
                        correct += (outputs.argmax(1) == labels).sum().item()
                val_acc = correct / len(val_ds)
                mlflow.log_metrics(
                    {
                        "train_loss": running_loss / len(train_ds),
                        "val_loss": val_loss / len(val_ds),
                        "val_accuracy": val_acc,
                    },
                    step=epoch,
                )
                trial.report(val_acc, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return val_acc

    study = optuna.create_study(
        study_name="baseline",
        storage=args.storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(),
        load_if_exists=True,
    )
    with mlflow.start_run(run_name="baseline-study"):
        study.optimize(objective, n_trials=args.trials, timeout=args.timeout)
        mlflow.log_metric("best_val_accuracy", study.best_value)
    print(f"best val_accuracy {study.best_value:.4f} with {study.best_params}")


if __name__ == "__main__":
    main()
