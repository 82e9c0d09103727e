"""Train-step throughput (images/s after compilation) of GLDFA-Net: the JAX data-parallel step of
gldfa_jax.train beside the same step written in PyTorch (when torch imports), at 384×128 and 256×128,
batch P×K = 8×4 = 32 (paper §4.1). Prints one markdown table.

    python -m benchmarks.train_step [--config experiments/market.py] [--steps 3] [--sizes 384x128,256x128]
                                    [--depth 50] [--width 1.0] [--threads N]

Both steps do the same work: ResNet forward/backward in training mode (batch statistics), the GLDFA head,
label-smoothed ID loss, soft-weighted triplet on the global Euclidean and the local LSA distances, centre loss,
Adam (L2 1e-5) on the weights and SGD on the centres. Inputs are pre-augmented float images.
"""
import argparse
import datetime
import os
import platform
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from gldfa_jax import train  # noqa: E402
from gldfa_jax.model import build_model  # noqa: E402

NUM_CLASSES = 751  # Market-1501 training identities


def load_config(path: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def batch(config, height, width, seed=0):
    rng = np.random.default_rng(seed)
    p, k = config.data.num_identities, config.data.num_instances
    images = rng.normal(size=(p * k, height, width, 3)).astype(np.float32)
    labels = np.repeat(rng.choice(NUM_CLASSES, p, replace=False), k).astype(np.int32)
    return images, labels


def time_steps(step, steps: int) -> tuple:
    """(compile+first step seconds, fastest of the next `steps`: the machine may be shared, the minimum is the
    least disturbed)."""
    tic = time.perf_counter()
    step()
    first = time.perf_counter() - tic
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        step()
        times.append(time.perf_counter() - tic)
    return first, min(times)


def jax_step(config, height, width):
    model = build_model(config.model, NUM_CLASSES, axis_name=train.AXIS)
    tx = train.make_optimizer(config.optim, 100)
    shape = (height, width, 3)
    variables = train.init_variables(model, jax.random.PRNGKey(0), shape)
    state = train.replicate(train.create_train_state(model, tx, variables, NUM_CLASSES, jax.random.PRNGKey(1), shape))
    p_step = train.data_parallel(train.make_train_step(model, tx, config), donate_argnums=(0,))
    images, labels = batch(config, height, width)
    images, labels = train.shard_batch(images), train.shard_batch(labels)
    holder = [state]

    def step():
        holder[0], metrics = p_step(holder[0], images, labels)
        jax.block_until_ready(metrics)

    return step


def torch_step(config, height, width):
    import torch
    import torch.nn.functional as F
    from test_pretrained import torch_resnet  # the torchvision-layout ResNet the equivalence test builds

    m, lc = config.model, config.loss
    k, d = m.num_stripes, m.embed_dim
    backbone = torch_resnet(m.depth, int(64 * m.width_multiplier), m.last_stride).train()
    channels = backbone.fc.in_features
    head = torch.nn.ModuleDict({
        "global_fc": torch.nn.Linear(channels, d, bias=False), "global_bn": torch.nn.BatchNorm1d(d),
        "local_conv": torch.nn.Conv2d(channels, d, 1, bias=False), "local_bn": torch.nn.BatchNorm2d(d),
        "neck_bn": torch.nn.BatchNorm1d(d * (k + 1)),
        "classifier": torch.nn.Linear(d * (k + 1), NUM_CLASSES, bias=False)})
    params = [p for n, p in backbone.named_parameters() if not n.startswith("fc.")] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    centers = {"global": torch.zeros(NUM_CLASSES, d, requires_grad=True),
               "local": torch.zeros(NUM_CLASSES, k * d, requires_grad=True)}
    center_opt = torch.optim.SGD(list(centers.values()), lr=lc.center_lr)
    window = lc.window or max(1, k // 2)
    half = window // 2
    band = (torch.arange(k)[:, None] - torch.arange(k)[None]).abs() <= half

    def soft_triplet(dist, labels):
        pos = labels[:, None] == labels[None]
        neg = ~pos
        wp = torch.softmax(dist.masked_fill(~pos, -1e9), 1)
        wn = torch.softmax((-dist).masked_fill(~neg, -1e9), 1)
        return F.relu((wp * dist).sum(1) - (wn * dist).sum(1) + lc.triplet_margin).mean()

    def lsa(x):  # [B, k, d] -> [B, B]
        s = torch.cdist(x.reshape(-1, d), x.reshape(-1, d)).reshape(x.shape[0], k, x.shape[0], k).transpose(1, 2)
        s = s.masked_fill(~band, float("inf"))
        return torch.minimum(s.min(3).values.sum(2), s.min(2).values.sum(2))

    images, labels = batch(config, height, width)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # PyTorch's NCHW
    y = torch.from_numpy(labels).long()

    def step():
        fmap = backbone(x)
        g = head["global_bn"](head["global_fc"](fmap.mean((2, 3))))
        loc = torch.relu(head["local_bn"](head["local_conv"](fmap)))
        loc = F.adaptive_avg_pool2d(loc, (k, 1))[..., 0].transpose(1, 2)  # [B, k, d]
        final = head["neck_bn"](torch.cat([loc.flatten(1), g], 1))
        logits = head["classifier"](final)
        center = sum(0.5 * ((f - centers[n][y]) ** 2).sum(1).mean() for n, f in (("global", g),
                                                                                  ("local", loc.flatten(1))))
        loss = (F.cross_entropy(logits, y, label_smoothing=lc.label_smoothing)
                + lc.triplet_weight * (soft_triplet(torch.cdist(g, g), y) + soft_triplet(lsa(loc), y))
                + lc.center_weight * center)
        opt.zero_grad()
        center_opt.zero_grad()
        loss.backward()
        for c in centers.values():
            c.grad /= lc.center_weight
        opt.step()
        center_opt.step()

    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(REPO, "experiments", "market.py"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (compiling) one")
    parser.add_argument("--sizes", default="384x128,256x128")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--width", type=float, default=None, help="model.width_multiplier")
    parser.add_argument("--threads", default="1,2", help="PyTorch intra-op thread counts to measure")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.depth:
        config.model.depth = args.depth
    if args.width:
        config.model.width_multiplier = args.width
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    try:
        import torch
        torch_info = f"torch {torch.__version__}"
    except ImportError:
        torch, threads, torch_info = None, [], "torch not importable: PyTorch columns skipped"
    b = config.data.num_identities * config.data.num_instances
    print(f"# train step, ResNet-{config.model.depth} ×{config.model.width_multiplier}, batch {b}, "
          f"{datetime.date.today()}, {platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
          f"JAX {jax.__version__} on {jax.default_backend()} ({jax.local_device_count()} device(s)), {torch_info}")
    torch_cols = [f"PyTorch {t} thread(s) img/s" for t in threads]
    print("| input | JAX img/s | JAX compile + 1st step s | " + " | ".join(torch_cols + ["best PyTorch / JAX"]) + " |")
    print("|---" * (4 + len(threads)) + "|")
    for h, w in sizes:
        first, fastest = time_steps(jax_step(config, h, w), args.steps)
        jax_rate = b / fastest
        rates = []
        for t in threads:
            torch.set_num_threads(t)
            rates.append(b / time_steps(torch_step(config, h, w), args.steps)[1])
        cells = [f"{r:.1f}" for r in rates] + ([f"{max(rates) / jax_rate:.2f}×"] if rates else ["-"])
        print(f"| {h}×{w} | {jax_rate:.1f} | {first:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
