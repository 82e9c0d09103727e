"""Real CUHK03 crops from an ImageNet-initialised backbone, as the paper starts (§4.1): torchvision's ImageNet
MobileNetV2 (width 1.0, last stride 1: output stride 16, an 8×4 map at 128×64) under the unchanged GLDFA heads
(d = 256, k = 8), trained on the 543 identities of shared/data/cuhk03_real and tested on its 100-identity split.

    python -m gldfa_jax.pretrained fetch mobilenet_v2 --out weights
    python -m gldfa_jax.main --config experiments/cuhk03_real_imagenet.py \
        --config.model.pretrained=weights/mobilenet_v2.safetensors

model.pretrained comes from the command line (empty here = from scratch, on the same schedule). Fine-tuning
schedule: the strong baseline's (Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-ID", CVPR-W
2019: Adam 3.5e-4, linear warm-up from 0.1× over the first 10 of 120 epochs, ×0.1 at epochs 40 and 70), shortened
in proportion to fit a 2-core CPU; see docs/results.md for the time of one run and the numbers.
"""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "market_layout"
    c.data.root = "../shared/data/cuhk03_real"
    c.data.height = 128  # CPU size (the paper's 384×128: the GPU script, benchmarks/imagenet_study.py)
    c.data.width = 64

    c.model.backbone = "mobilenet_v2"
    c.model.pretrained = ""  # --config.model.pretrained=weights/mobilenet_v2.safetensors

    # Fine-tuning on a 2-core CPU's budget: 15 short epochs of 40 P×K steps (600 steps, 19,200 crops: 3.6 passes
    # over the 5,300; each short epoch draws a fresh P×K order). Adam at the strong baseline's fine-tuning rate with
    # its linear warm-up from 0.1× over the first short epoch (Luo et al. 2019: 10 of 120 epochs), and one ×0.1
    # step at 2/3 of training as PCB's fine-tuning (Sun et al., ECCV 2018: 40 of 60 epochs). The strong baseline's
    # own decays at 1/3 and 7/12 left 400 steps under-trained here (seed 0: global+lsa 9.4 mAP; docs/results.md).
    c.train.steps_per_epoch = 40
    c.train.epochs = 15
    c.optim.lr = 3.5e-4
    c.optim.warmup_epochs = 1
    c.optim.warmup_factor = 0.1
    c.optim.decay_epochs = (10,)
    c.train.eval_every = 15  # evaluate once, at the end
    c.train.checkpoint_every = 5
    c.train.log_every = 20
    return c
