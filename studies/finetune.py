"""Fine-tune ResNet-18 from ImageNet weights on scikit-learn's handwritten digits (24 px).

The digits ship with scikit-learn (offline). The ImageNet checkpoint (resnet18-f37072fd.pth,
45 MB) is read from $TORCH_HOME/hub/checkpoints, or downloaded there once. A machine that has
neither trains every trial from scratch (random init): one line says so and how to fix it, and
each trial records `weights: none` with `weights_requested: imagenet`. To fine-tune offline,
copy the checkpoint there first, or pass your own: --set weights=path/to/state_dict.pt.

Run: exp search studies/finetune.py --trials 50
Shrink it: exp search studies/finetune.py --trials 3 --set epochs=1 --set subset=300 --study-name finetune-quick
"""

from exptrack import Study

study = Study(
    name="finetune",
    search_space="search_spaces/finetune.yaml",
    metric="val_accuracy",
    direction="maximize",
    # Sized for 2 CPU cores, where full fine-tuning of resnet18 runs ~100-170 samples/s at any
    # size <= 32 px (oneDNN's convolution backward dominates): 900 training digits x 2 epochs keep
    # 50 trials within minutes (measured: 5 min 27 s with the install, 36 complete, 14 pruned,
    # 1 diverged, best 0.969). On a GPU: studies/finetune_gpu.py.
    fixed={
        "backbone": "resnet18",
        "weights": "imagenet",
        "dataset": "digits",
        "image_size": 24,
        "subset": 900,
        "epochs": 2,
    },
    pruner="median",
)
