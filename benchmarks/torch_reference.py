"""An independent PyTorch run of the GLDFA-Net recipe, to tell defects of our JAX code from
weaknesses of the recipe itself.

    python -m benchmarks.torch_reference --config experiments/cuhk03_real.py --workdir runs/torch_reference \
        --seeds 0,1,2 [--config.FIELD=VALUE ...]

Written by hand from the paper (§3, §4.1), sharing no model, loss or optimiser code with gldfa_jax:
ResNet and MobileNetV2 in torchvision's layout (torchvision is not installed beside torch here; ImageNet weights
load after construction, checked against the JAX backbone on one batch), the global and local heads,
label-smoothed ID loss on the BN-necked concatenation, soft-weighted (or batch-hard) triplet on the global
Euclidean and the LSA distance, centre loss with its own SGD, Adam with PyTorch's weight decay, warm-up and step
decay; on a GPU when torch sees one.
What it shares with the JAX trainer, so that only the implementations differ: the decoded images
(gldfa_jax.experiment_data), the P×K sampler and the augmentation (data_pipelines), and the evaluation
(gldfa_jax.evaluation.evaluate). Each seed writes WORKDIR/seed<S>/results.json and
feature_stats.json, in the JAX trainer's formats.
"""

import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gldfa_jax.losses import LossOptions
from gldfa_jax.resnet import scaled_channels

STAGES = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)), 50: (True, (3, 4, 6, 3)), 101: (True, (3, 4, 23, 3))}


class Block(nn.Module):
    """torchvision's BasicBlock / Bottleneck (stride on the 3×3)."""

    def __init__(self, cin, planes, stride, bottleneck):
        super().__init__()
        self.bottleneck = bottleneck
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3, self.bn3 = nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(torch.relu(y)))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet without pooling and fc (state-dict names match, plus an unused `fc`), NCHW."""

    def __init__(self, depth: int, base: int, last_stride: int):
        super().__init__()
        bottleneck, blocks = STAGES[depth]
        self.conv1, self.bn1 = nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for s, n in enumerate(blocks):
            layer = []
            for b in range(n):
                stride = 1 if b > 0 or s == 0 else (last_stride if s == 3 else 2)
                layer.append(Block(cin, base * 2**s, stride, bottleneck))
                cin = base * 2**s * (4 if bottleneck else 1)
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.out_channels = cin
        self.fc = nn.Linear(cin, 1000)  # unused; keeps torchvision's state-dict keys

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def conv_bn_relu6(cin, cout, kernel, stride, groups=1):
    """torchvision's Conv2dNormActivation (names `0` conv, `1` BN)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()
    )


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: [1×1 expand,] depthwise 3×3 (stride), linear 1×1 project, BN; residual when
    the shape is kept."""

    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn_relu6(cin, hidden, 1, 1)] if expansion != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False)]
        self.conv = nn.Sequential(*layers, nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0) without its classifier's use (state-dict names match, plus an unused
    `classifier.1`), NCHW; `last_stride` replaces the stride of the 160-channel stage (output stride 16)."""

    # Sandler et al. Table 2 (t, c, n, s), written out here rather than imported: the reference shares no model code.
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, last_stride: int):
        super().__init__()
        layers, cin = [conv_bn_relu6(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for b in range(n):
                stride = 1 if b > 0 else (last_stride if c == 160 else s)
                layers.append(InvertedResidual(cin, c, stride, t))
                cin = c
        layers.append(conv_bn_relu6(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.out_channels = 1280
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))  # unused; torchvision's keys

    def forward(self, x):
        return self.features(x)


def load_backbone(net, path: str) -> None:
    """ImageNet weights (torchvision's .pth or our .safetensors) into `net.backbone`, strictly (every tensor named
    and shaped as torchvision's). Call it after GLDFANet's constructor, which re-initialises every conv."""
    from gldfa_jax.pretrained import read_state_dict

    state = {k: torch.from_numpy(np.asarray(v)) for k, v in read_state_dict(path).items()}
    net.backbone.load_state_dict(state, strict=True)


def check_backbone_matches_jax(net, config, images_uint8: np.ndarray) -> float:
    """Assert that the reference's loaded backbone computes what the JAX backbone computes with the same file on
    `images_uint8` (eval mode); otherwise a comparison would be of a pretrained model against a scratch one.
    Returns the largest difference relative to the feature map's largest magnitude."""
    import functools

    import jax
    import jax.numpy as jnp

    from data_pipelines.augment import augment_params, eval_transform
    from gldfa_jax.model import backbone_of, build_model
    from gldfa_jax.pretrained import load_pretrained

    x = np.asarray(eval_transform(images_uint8, augment_params(config.data)))
    backbone = backbone_of(build_model(config.model, num_classes=1).clone(dtype=jnp.float32))
    shapes = jax.eval_shape(functools.partial(backbone.init, train=False), jax.random.PRNGKey(0), jnp.asarray(x[:1]))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    variables = load_pretrained(config.model.pretrained, zeros, config.model.backbone)
    want = np.asarray(backbone.apply(variables, jnp.asarray(x), train=False))
    was_training = net.training
    net.eval()
    with torch.no_grad():
        got = net.backbone(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    net.train(was_training)
    error = float(np.abs(got - want).max() / np.abs(want).max())
    if not error < 1e-3:
        raise AssertionError(f"the reference backbone differs from the JAX one with {config.model.pretrained}: {error}")
    return error


class GLDFANet(nn.Module):
    """Backbone + global branch (avg pool -> fc -> BN) + local branch (1×1 conv -> BN [-> ReLU] -> k stripes by
    average pooling) + BN neck on [local flattened, global] + bias-free classifier."""

    def __init__(self, model_config, num_classes: int):
        super().__init__()
        m = model_config
        self.k, d = m.num_stripes, m.embed_dim
        self.local_relu = m.local_relu
        if m.local_conv != "shared" or m.branches != "global_local" or m.id_feature != "final":
            raise ValueError(
                f"model.local_conv={m.local_conv!r}, model.branches={m.branches!r}, model.id_feature="
                f"{m.id_feature!r}: the reference builds the paper's model only (shared local conv, both branches, "
                "ID loss on the final feature)"
            )
        if m.backbone == "mobilenet_v2":
            if m.width_multiplier != 1.0:
                raise ValueError(f"model.width_multiplier={m.width_multiplier}: the reference MobileNetV2 is width 1.0")
            self.backbone = MobileNetV2(m.last_stride)
        else:
            # The same width rule as ours, so both build the same architecture (not code that could hide a defect).
            self.backbone = ResNet(m.depth, scaled_channels(64, m.width_multiplier), m.last_stride)
        c = self.backbone.out_channels
        self.global_fc, self.global_bn = nn.Linear(c, d, bias=False), nn.BatchNorm1d(d)
        self.local_conv, self.local_bn = nn.Conv2d(c, d, 1, bias=False), nn.BatchNorm2d(d)
        self.neck_bn = nn.BatchNorm1d(d * (self.k + 1))
        self.neck_bn.bias.requires_grad_(False)  # BNNeck: scale only
        self.classifier = nn.Linear(d * (self.k + 1), num_classes, bias=False)
        for mod in self.modules():  # torchvision's conv init; the classifier as in the strong baseline
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.global_fc.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        fmap = self.backbone(x)
        g = self.global_bn(self.global_fc(fmap.mean((2, 3))))
        loc = self.local_bn(self.local_conv(fmap))
        if self.local_relu:
            loc = torch.relu(loc)
        h = loc.shape[2]  # PyTorch's adaptive pooling bins, as gldfa_jax.model.stripe_bins
        loc = torch.stack(
            [loc[:, :, (i * h) // self.k : -((-(i + 1) * h) // self.k)].mean((2, 3)) for i in range(self.k)], 1
        )  # [B, k, d]
        final = self.neck_bn(torch.cat([loc.flatten(1), g], 1))
        return g, loc, final, self.classifier(final)


def lsa(x, y, window: int, normalize: bool):
    """LSA distance (Algorithm 1, eqs. 2-5): x [M, k, d], y [N, k, d] -> [M, N], from the full k×k stripe
    distances masked to the band |i - j| <= W // 2."""
    m, k, d = x.shape
    s = torch.cdist(x.reshape(-1, d), y.reshape(-1, d)).reshape(m, k, -1, k).transpose(1, 2)  # [M, N, k, k]
    if normalize:
        s = (torch.exp(s) - 1) / (torch.exp(s) + 1)
    band = (torch.arange(k)[:, None] - torch.arange(k)[None]).abs() <= window // 2
    s = s.masked_fill(~band, float("inf"))
    return torch.minimum(s.min(3).values.sum(2), s.min(2).values.sum(2))


def triplet(dist, labels, margin: float, kind: str):
    """'soft': Ristani & Tomasi's softmax-weighted triplet (eqs. 7-8); 'hard': batch-hard (Hermans et al.)."""
    same = labels[:, None] == labels[None]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool)
    if kind == "hard":
        d_pos = dist.masked_fill(~pos, -float("inf")).max(1).values
        d_neg = dist.masked_fill(same, float("inf")).min(1).values
    else:
        d_pos = (torch.softmax(dist.masked_fill(~pos, -float("inf")), 1) * dist).sum(1)
        d_neg = (torch.softmax((-dist).masked_fill(same, -float("inf")), 1) * dist).sum(1)
    return F.relu(margin + d_pos - d_neg).mean()


def pairwise(x):
    """Euclidean distances [B, B] with a finite gradient on the diagonal."""
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None] - 2 * x @ x.T).clamp_min(1e-12).sqrt()


def total_loss(out, labels, centers, options, num_stripes: int):
    """Eq. 12: ID (label smoothing) + w·(triplet global + triplet local) + λ·centre -> (total, parts); options is
    a gldfa_jax.losses.LossOptions."""
    g, loc, _, logits = out
    c = options
    parts = {"id": F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)}
    zero = torch.zeros(())
    local_kind = c.local_triplet or c.triplet
    window = (c.lsa.window or max(1, num_stripes // 2)) if c.use_lsa else 1
    g_dist = pairwise(g) if c.triplet != "none" else None
    l_dist = lsa(loc, loc, window, c.lsa.normalize) if local_kind != "none" else None
    if c.triplet_distance == "sum" and g_dist is not None and l_dist is not None:  # Fig. 2: one triplet on the sum
        parts["triplet_global"], parts["triplet_local"] = (
            triplet(g_dist + l_dist, labels, c.triplet_margin, c.triplet),
            zero,
        )
    else:
        parts["triplet_global"] = zero if g_dist is None else triplet(g_dist, labels, c.triplet_margin, c.triplet)
        parts["triplet_local"] = zero if l_dist is None else triplet(l_dist, labels, c.triplet_margin, local_kind)
    feats = {"global": g, "local": loc.flatten(1)}
    parts["center"] = sum((0.5 * ((feats[n] - centers[n][labels]) ** 2).sum(1).mean() for n in c.center_branches), zero)
    total = (
        parts["id"]
        + c.triplet_weight * (parts["triplet_global"] + parts["triplet_local"])
        + c.center_weight * parts["center"]
    )
    return total, parts


def optimizers(net, config, num_classes: int, steps_per_epoch: int = 1, device: str = "cpu"):
    """(Adam with PyTorch's L2 weight decay and per-update step decay, SGD on the centres, the centres)."""
    o, m = config.optim, config.model
    unused = ("backbone.fc.", "backbone.classifier.")  # the ImageNet classifiers
    params = [p for n, p in net.named_parameters() if not n.startswith(unused) and p.requires_grad]
    opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    milestones = [int(e) * steps_per_epoch for e in o.decay_epochs]
    warmup = round(o.warmup_epochs * steps_per_epoch)

    def factor(step):  # step decay, times a linear warm-up from warmup_factor over the first `warmup` updates
        ramp = o.warmup_factor + (1 - o.warmup_factor) * min(step / warmup, 1.0) if warmup else 1.0
        return o.decay_factor ** sum(step >= m for m in milestones) * ramp

    opt.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    centers = {
        "global": torch.zeros(num_classes, m.embed_dim, device=device, requires_grad=True),
        "local": torch.zeros(num_classes, m.embed_dim * m.num_stripes, device=device, requires_grad=True),
    }
    return opt, torch.optim.SGD(list(centers.values()), lr=config.loss.center_lr), centers


def update(out, labels, centers, opt, center_opt, config) -> dict:
    """One step on the network output `out` -> the loss parts (eq. 12)."""
    loss, parts = total_loss(out, labels, centers, LossOptions.from_config(config), config.model.num_stripes)
    opt.zero_grad()
    center_opt.zero_grad()
    loss.backward()
    if config.loss.center_weight:
        for c in centers.values():  # the centres' update does not depend on λ (strong baseline)
            if c.grad is not None:
                c.grad /= config.loss.center_weight
        center_opt.step()
    opt.step()
    opt.scheduler.step()
    return parts


@torch.no_grad()
def features(net, images_uint8: np.ndarray, data_config, batch_size: int) -> dict:
    """uint8 [N, H, W, 3] -> {"global", "local", "final"} numpy, eval mode (running BN statistics)."""
    net.eval()
    device = next(net.parameters()).device
    mean = torch.tensor(data_config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data_config.std, device=device).view(1, 3, 1, 1)
    chunks = []
    for start in range(0, len(images_uint8), batch_size):
        x = torch.from_numpy(images_uint8[start : start + batch_size]).to(device).permute(0, 3, 1, 2).float() / 255.0
        g, loc, final, _ = net((x - mean) / std)
        chunks.append({"global": g.cpu().numpy(), "local": loc.cpu().numpy(), "final": final.cpu().numpy()})
    net.train()
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def train_one(config, data, seed: int, workdir: str) -> dict:
    """Train on data.train with `config`, evaluate with the project's evaluation; writes results.json."""
    import jax
    from tqdm import tqdm

    from data_pipelines.augment import augment_batch, augment_params
    from data_pipelines.sampler import PKSampler
    from gldfa_jax import evaluation, reports

    torch.manual_seed(seed)
    d, t = config.data, config.train
    net = GLDFANet(config.model, data.num_classes)
    if config.model.pretrained:  # after the constructor, whose conv initialisation would overwrite the weights
        load_backbone(net, config.model.pretrained)
        check_backbone_matches_jax(net, config, data.train.images[:8])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net.to(device)
    sampler = PKSampler(data.train.pids, d.num_identities, d.num_instances, seed)
    spe = int(t.steps_per_epoch) or int(sampler.num_batches)
    opt, center_opt, centers = optimizers(net, config, data.num_classes, spe, device)
    aug_key, aug = jax.random.PRNGKey(seed), augment_params(d)
    log = []
    net.train()
    for epoch in range(t.epochs):
        order = np.asarray(sampler.epoch(epoch))
        order = np.resize(order, (spe, order.shape[1])) if len(order) < spe else order[:spe]
        bar = tqdm(range(spe), desc=f"torch seed {seed} epoch {epoch + 1}/{t.epochs}", unit="step", leave=False)
        for i in bar:
            idx = order[i]
            key = jax.random.fold_in(aug_key, epoch * spe + i)
            x = torch.from_numpy(np.array(augment_batch(key, data.train.images[idx], aug))).permute(0, 3, 1, 2)
            y = torch.from_numpy(data.train.pids[idx].astype(np.int64)).to(device)
            parts = update(net(x.to(device).contiguous()), y, centers, opt, center_opt, config)
            if i % t.log_every == 0 or i == spe - 1:
                values = {k: float(v.detach()) for k, v in parts.items()}
                log.append({"step": epoch * spe + i + 1, **values})
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()})
    q = features(net, data.query.images, d, config.eval.batch_size)
    g = features(net, data.gallery.images, d, config.eval.batch_size)
    options = evaluation.EvalOptions.from_config(config)
    evaluated = evaluation.evaluate(
        q, g, data.query, data.gallery, options, report_queries=reports.sample_queries(len(data.query.pids))
    )
    results = evaluated.results
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in log)
    reports.write_eval_reports(workdir, evaluated, q, g, data.query, data.gallery, window=options.lsa.window)
    return results


def main(argv):
    from absl import app, flags  # noqa: F401  (flags parsed by app.run)

    from gldfa_jax import evaluation
    from gldfa_jax.experiment_data import load_experiment_data

    del argv
    config = _CONFIG.value
    torch.set_num_threads(_THREADS.value or os.cpu_count())
    data = load_experiment_data(config.data)
    for seed in [int(s) for s in _SEEDS.value.split(",")]:
        config.unlock()
        config.seed = seed
        out = os.path.join(_WORKDIR.value, f"seed{seed}")
        if os.path.exists(os.path.join(out, "results.json")):
            print(f"seed {seed}: already done ({out})")
            continue
        tic = time.time()
        results = train_one(config, data, seed, out)
        print(f"seed {seed} ({(time.time() - tic) / 60:.1f} min):\n{evaluation.format_table(results)}", flush=True)
    print(summary_table(_WORKDIR.value))


def summary_table(workdir: str) -> str:
    """Markdown: mAP per mode, mean ± sample std over the seed<S>/results.json found in `workdir`."""
    runs = []
    for entry in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, entry, "results.json")
        if entry.startswith("seed") and os.path.exists(path):
            with open(path) as f:
                runs.append(json.load(f))
    modes = [m for m in runs[0] if "+rerank" not in m] if runs else []
    cells = []
    for m in modes:
        values = np.array([r[m]["mAP"] for r in runs])
        cells.append(f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}")
    return (
        f"PyTorch reference, {len(runs)} seed(s), mAP %:\n| "
        + " | ".join(modes)
        + " |\n"
        + "|---" * len(modes)
        + "|\n| "
        + " | ".join(cells)
        + " |"
    )


if __name__ == "__main__":
    from absl import app, flags
    from ml_collections import config_flags

    _CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config, e.g. experiments/cuhk03_real.py")
    _WORKDIR = flags.DEFINE_string("workdir", "runs/torch_reference", "one folder per seed is written here")
    _SEEDS = flags.DEFINE_string("seeds", "0", "comma-separated seeds")
    _THREADS = flags.DEFINE_integer("threads", 0, "torch intra-op threads (0 = all cores)")
    flags.mark_flag_as_required("config")
    app.run(main)
