"""The embedded default: the synthetic re-ID world (data_pipelines.synthetic), generated into data.root on first
use, with a small ResNet-18 a 2-core CPU trains in a few minutes. Same method and losses as the paper (§3, §4.1);
only sizes and schedule are scaled down."""

import ml_collections

from experiments import base


def get_config():
    c = base.get_config()
    c.data.name = "market_layout"
    c.data.root = "data/synthetic"
    # Read by gldfa_jax.experiment_data: keyword arguments of data_pipelines.synthetic.generate.
    c.data.generate = ml_collections.ConfigDict({"identities": 150, "seed": 0})
    c.data.height = 128  # small input for CPU; 16×8 map (last stride 1)
    c.data.width = 64
    c.data.num_identities = 8  # P×K = 32 as in §4.1
    c.data.num_instances = 4

    c.model.depth = 18
    c.model.width_multiplier = 0.25
    c.model.embed_dim = 64

    c.optim.lr = 3.5e-4  # no ImageNet weights here: the paper's 3.5e-3 overshoots from scratch
    c.optim.decay_epochs = (30,)
    c.train.epochs = 40
    c.train.eval_every = 10
    c.train.checkpoint_every = 5
    c.train.log_every = 10
    c.eval.batch_size = 128
    return c
