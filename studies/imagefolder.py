"""Fine-tune an ImageNet ResNet-18 on your own images: one subfolder per class.

Run: exp search studies/imagefolder.py --trials 30 --set dataset=imagefolder:/data/pets
Layout: /data/pets/<class>/*.jpg (split by val_fraction), or /data/pets/train/<class>/ + val/<class>/.
"""

from exptrack import Study

study = Study(
    name="imagefolder",
    search_space="search_spaces/imagefolder.yaml",
    metric="val_accuracy",
    direction="maximize",
    # 128 px keeps a few thousand photos in memory as uint8 (5k x 3 x 128 x 128 = 246 MB)
    fixed={
        "backbone": "resnet18",
        "weights": "imagenet",
        "dataset": "imagefolder:data/images",
        "image_size": 128,
        "augment": True,
        "epochs": 5,
    },
    pruner="median",
)
