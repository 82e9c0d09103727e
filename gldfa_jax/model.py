"""GLDFA-Net (paper §3.1, Fig. 2): ResNet backbone, global and local branches, final feature, classifier.

Which tensor feeds what (strong-baseline convention):
  global_feat [B, d]     pooled map -> 1×1 conv (Dense) -> BN.   Triplet (eqs. 7-8, Euclidean, eq. 1) and
                         centre loss (eq. 9); test key "global".
  local_feat  [B, k, d]  map -> 1×1 conv -> BN -> ReLU -> k horizontal stripes.  Triplet on the LSA distance
                         (eq. 5) and centre loss on the flattened stripes; test key "local".
  final_feat  [B, D]     concat(local stripes flattened, global) (D = d·(k+1), local first as in
                         f_Final = [f_Local · f_Global]) -> BN neck (when model.bn_neck).  Test key "final" is
                         this AFTER-neck feature, as the strong baseline uses at test time.
  logits      [B, C]     classifier (Dense, no bias) on final_feat: the ID loss (eq. 6, label smoothing).
All outputs are float32 whatever the compute dtype.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from gldfa_jax.mobilenet import MobileNetV2
from gldfa_jax.resnet import ResNet, batch_norm, conv, conv_init

BACKBONES = ("resnet", "mobilenet_v2")
BRANCHES = ("global", "local", "global_local")
LOCAL_CONVS = ("shared", "per_stripe")
ID_FEATURES = ("final", "global")
POOLS = ("avg", "max")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class GLDFAOutput:
    """What `GLDFANet.apply` returns; a field is None when `model.branches` switches its branch off."""

    global_feat: jax.Array | None  # [B, d]
    local_feat: jax.Array | None  # [B, k, d]
    final_feat: jax.Array  # [B, D], after the BN neck when bn_neck
    logits: jax.Array  # [B, num_classes]


def stripe_bins(height: int, num_stripes: int) -> list[tuple[int, int]]:
    """Row ranges [start, end) of the k horizontal stripes of a map of `height` rows.

    PyTorch's adaptive-pooling rule: stripe i covers rows floor(i·H/k) .. ceil((i+1)·H/k), so stripes
    are equal when k divides H, overlap by a row when it does not, and repeat rows when H < k.
    """
    return [((i * height) // num_stripes, -((-(i + 1) * height) // num_stripes)) for i in range(num_stripes)]


def horizontal_pool(x: jax.Array, num_stripes: int, mode: str) -> jax.Array:
    """Map [B, H, W, C] -> stripes [B, k, C] by average or max pooling over each stripe's rows and all columns."""
    reduce = jnp.mean if mode == "avg" else jnp.max
    return jnp.stack([reduce(x[:, s:e], axis=(1, 2)) for s, e in stripe_bins(x.shape[1], num_stripes)], axis=1)


def backbone_of(model: "GLDFANet", name: str | None = None) -> nn.Module:
    """The backbone `model` runs: images [B, H, W, 3] -> feature map [B, h, w, C]. Called outside a module, it is
    a standalone module (e.g. to compare it with another framework's backbone on the same weights)."""
    m = model
    if m.backbone == "mobilenet_v2":
        return MobileNetV2(m.last_stride, m.width_multiplier, m.dtype, m.axis_name, name=name)
    return ResNet(m.depth, m.last_stride, m.width_multiplier, m.dtype, m.axis_name, name=name)


class GLDFANet(nn.Module):
    """Images [B, H, W, 3] (normalised, NHWC) -> GLDFAOutput. See the module docstring for the outputs."""

    num_classes: int
    backbone: str = "resnet"  # or "mobilenet_v2" (`depth` is ResNet's only)
    depth: int = 50
    last_stride: int = 1
    width_multiplier: float = 1.0
    branches: str = "global_local"
    num_stripes: int = 8
    embed_dim: int = 256  # 0 keeps the backbone's channels (no 1×1 reduction): the plain ResNet rows of Table 2
    global_pool: str = "avg"
    local_pool: str = "avg"
    local_relu: bool = True  # False: signed stripe features (BN output), as the global feature is
    local_conv: str = "shared"  # "per_stripe": PCB's head, stripes pooled first, then one 1×1 conv + BN per stripe
    bn_neck: bool = True
    id_feature: str = "final"  # the classifier's input: "final" (§3.1) or "global" (AlignedReID)
    dtype: Any = jnp.float32
    axis_name: str | None = None  # pmap axis over which BatchNorm statistics are averaged

    @nn.compact
    def __call__(self, images, train: bool = False) -> GLDFAOutput:
        bn = lambda name, use_bias=True: batch_norm(train, self.dtype, self.axis_name, name, use_bias)
        fmap = backbone_of(self, name="backbone")(images, train)
        global_feat = local_feat = None
        parts = []
        if self.branches in ("local", "global_local"):
            if self.local_conv == "per_stripe":
                local_feat = self._per_stripe_head(fmap, train)
            else:
                y = fmap
                if self.embed_dim:
                    y = conv(self.embed_dim, 1, 1, self.dtype, "local_conv")(y)
                y = bn("local_bn")(y)
                if self.local_relu:
                    y = nn.relu(y)
                local_feat = horizontal_pool(y, self.num_stripes, self.local_pool)
            local_feat = local_feat.astype(jnp.float32)
            parts.append(local_feat.reshape(local_feat.shape[0], -1))
        if self.branches in ("global", "global_local"):
            pooled = jnp.mean(fmap, axis=(1, 2)) if self.global_pool == "avg" else jnp.max(fmap, axis=(1, 2))
            if self.embed_dim:
                # A 1×1 conv on a pooled 1×1 map is a Dense layer; BN follows, so no bias.
                pooled = nn.Dense(
                    self.embed_dim,
                    use_bias=False,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                    kernel_init=conv_init,
                    name="global_fc",
                )(pooled)
            global_feat = bn("global_bn")(pooled).astype(jnp.float32)
            parts.append(global_feat)
        final = jnp.concatenate(parts, axis=-1)
        # The ID loss's feature: the final one (§3.1), or the global one alone (AlignedReID), whose classifier then
        # leaves the stripes to the LSA triplet; "final" stays the concatenation either way.
        id_input = final if self.id_feature == "final" else global_feat
        if self.bn_neck:
            # Strong-baseline BNNeck: scale only, the shift would be redundant before a bias-free classifier.
            id_input = bn("neck_bn", use_bias=False)(id_input)
        if self.id_feature == "final":
            final = id_input
        logits = nn.Dense(
            self.num_classes,
            use_bias=False,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            kernel_init=nn.initializers.normal(0.001),
            name="classifier",
        )(id_input)
        return GLDFAOutput(
            global_feat=global_feat,
            local_feat=local_feat,
            final_feat=final.astype(jnp.float32),
            logits=logits.astype(jnp.float32),
        )

    def _per_stripe_head(self, fmap, train: bool):
        """PCB's local head (Sun et al., ECCV 2018, §3.1): pool the map into k stripes [B, k, C] first, then a 1×1
        conv (a Dense on a pooled stripe) and a BN of each stripe's own -> [B, k, d]."""
        y = horizontal_pool(fmap, self.num_stripes, self.local_pool)
        if self.embed_dim:
            kernel = self.param(
                "local_conv_per_stripe", conv_init, (self.num_stripes, y.shape[-1], self.embed_dim), jnp.float32
            )
            y = jnp.einsum("bkc,kcd->bkd", y.astype(self.dtype), kernel.astype(self.dtype))
        # Statistics per stripe and channel: one BatchNorm1d per stripe, as PCB.
        y = batch_norm(train, self.dtype, self.axis_name, "local_bn_per_stripe", axis=(-2, -1))(y)
        return nn.relu(y) if self.local_relu else y


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"model.{name}={value!r} is not supported; set it to one of {list(options)}.")


def check_model_config(model_config) -> None:
    """A ValueError naming the `config.model` field, its value and the choices, for the first one out of range."""
    c = model_config
    _choice("backbone", c.backbone, BACKBONES)
    _choice("branches", c.branches, BRANCHES)
    _choice("local_conv", c.local_conv, LOCAL_CONVS)
    _choice("id_feature", c.id_feature, ID_FEATURES)
    if c.id_feature == "global" and c.branches == "local":
        raise ValueError("model.id_feature='global' needs the global branch; set model.branches to 'global_local'.")
    _choice("global_pool", c.global_pool, POOLS)
    _choice("local_pool", c.local_pool, POOLS)
    _choice("dtype", c.dtype, ("auto",) + tuple(DTYPES))
    _choice("depth", c.depth, (18, 34, 50, 101))
    _choice("last_stride", c.last_stride, (1, 2))
    if c.num_stripes < 1:
        raise ValueError(f"model.num_stripes={c.num_stripes} must be >= 1 (the paper uses 8).")
    if c.embed_dim < 0:
        raise ValueError(f"model.embed_dim={c.embed_dim} must be >= 0 (256 in the paper, 0 = no reduction).")
    if not c.width_multiplier > 0:
        raise ValueError(f"model.width_multiplier={c.width_multiplier} must be > 0 (1.0 = full ResNet).")


def build_model(model_config, num_classes: int, axis_name: str | None = None) -> GLDFANet:
    """GLDFANet from `config.model` (gldfa_jax/config.py); `axis_name` = the trainer's pmap axis, if any."""
    c = model_config
    check_model_config(c)
    if num_classes < 1:
        raise ValueError(f"num_classes={num_classes} must be >= 1 (the number of training identities).")
    return GLDFANet(
        num_classes=num_classes,
        backbone=c.backbone,
        depth=c.depth,
        last_stride=c.last_stride,
        width_multiplier=c.width_multiplier,
        branches=c.branches,
        num_stripes=c.num_stripes,
        embed_dim=c.embed_dim,
        global_pool=c.global_pool,
        local_pool=c.local_pool,
        local_relu=c.local_relu,
        local_conv=c.local_conv,
        bn_neck=c.bn_neck,
        id_feature=c.id_feature,
        dtype=compute_dtype(c.dtype),
        axis_name=axis_name,
    )


def compute_dtype(name: str, device=None):
    """`model.dtype` -> a jnp dtype. "auto": bfloat16 where the hardware computes it natively (TPUs, GPUs of compute
    capability >= 8.0 such as A100/H100); float16 on older GPUs (T4, V100: Colab's free GPU), which have fast float16
    but emulate bfloat16, trained with dynamic loss scaling (train.loss_scale_for), as flax's ImageNet example does
    there; float32 on CPUs."""
    if name != "auto":
        return DTYPES[name]
    device = device or jax.local_devices()[0]
    if device.platform == "tpu":
        return jnp.bfloat16
    if device.platform != "gpu":
        return jnp.float32
    capability = getattr(device, "compute_capability", None)
    return jnp.bfloat16 if capability and float(capability) >= 8.0 else jnp.float16


def test_features(output: GLDFAOutput) -> dict:
    """Features for evaluation: {"global": [N, d], "local": [N, k, d], "final": [N, D]}, float32.

    "final" is the feature after the BN neck (strong-baseline test feature); absent branches are left out.
    """
    feats = {"global": output.global_feat, "local": output.local_feat, "final": output.final_feat}
    return {key: value for key, value in feats.items() if value is not None}


test_features.__test__ = False  # pytest: not a test despite the name
