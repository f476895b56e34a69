"""Fine-tune a pretrained ResNet-18 on all of scikit-learn's handwritten digits, sized for one GPU.

Run: exp search studies/finetune_gpu.py --trials 50
Same search space as studies/finetune.py (which is sized for 2 CPU cores); a study of its own, so
trials of the two sizes are never mixed in one study or compared with each other.
"""

from exptrack import Study

study = Study(
    name="finetune-gpu",
    search_space="search_spaces/finetune.yaml",
    metric="val_accuracy",
    direction="maximize",
    # all 1,437 training digits at 32 px for 5 epochs; the set stays on the GPU as uint8
    # (1.8k x 3 x 32 x 32 = 5.5 MB). Too small to keep a GPU busy one trial at a time: steps are
    # launch-bound. benchmarks/gpu_study.py runs it against a plain Optuna + MLflow script.
    fixed={
        "backbone": "resnet18",
        "weights": "imagenet",
        "dataset": "digits",
        "image_size": 32,
        "subset": 0,
        "epochs": 5,
    },
    pruner="median",
)
