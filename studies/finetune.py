"""Fine-tune a pretrained ResNet-18 on scikit-learn's handwritten digits (32 px, offline).

Run: exp search studies/finetune.py --trials 50
Shrink it: exp search studies/finetune.py --trials 3 --set epochs=1 --set subset=300
"""

from exptrack import Study

study = Study(
    name="finetune",
    search_space="search_spaces/finetune.yaml",
    metric="val_accuracy",
    direction="maximize",
    # 3 epochs keeps 50 trials within ~10 minutes on 2 CPU cores; raise it on a GPU.
    fixed={"backbone": "resnet18", "weights": "imagenet", "dataset": "digits", "image_size": 32, "epochs": 3},
    pruner="median",
)
