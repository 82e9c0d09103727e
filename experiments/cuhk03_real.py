"""Real CUHK03 crops at CPU scale: train on the 543 identities of shared/data/cuhk03_real, test on
its 100-identity query/gallery split. The paper's method and losses (§3, §4.1); sizes and schedule are scaled
down so that a 2-core CPU trains one run in about 6 minutes (ResNet-18 ×0.25 from scratch, 12 epochs of
134 P×K steps). Override data.height/width for the 256×128 setting."""

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "market_layout"
    c.data.root = "../shared/data/cuhk03_real"
    c.data.height = 128  # CPU size; 16×8 map with last stride 1 (two rows per stripe at k = 8)
    c.data.width = 64

    c.model.depth = 18
    c.model.width_multiplier = 0.25
    c.model.embed_dim = 128

    c.optim.lr = 3.5e-4  # from scratch (no ImageNet weights here): §4.1's 3.5e-3 overshoots
    c.optim.decay_epochs = (9,)  # §4.1's ×0.1 step, at 3/4 of the short schedule
    c.train.epochs = 12
    c.train.eval_every = 12  # evaluate once, at the end
    c.train.checkpoint_every = 6
    c.train.log_every = 20
    return c
