"""Tune a randomly initialised ResNet-18 on synthetic images: no files, no downloads (benchmarks, demos).

Run: exp search studies/synthetic.py --trials 10
Bigger: exp search studies/synthetic.py --trials 10 --set dataset=synthetic:20000,100 --set image_size=64
"""

from exptrack import Study

study = Study(
    name="synthetic",
    search_space="search_spaces/imagefolder.yaml",
    metric="val_accuracy",
    direction="maximize",
    fixed={"backbone": "resnet18", "weights": "none", "dataset": "synthetic", "image_size": 32, "epochs": 2},
    pruner="median",
)
