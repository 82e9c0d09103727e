"""ResNet-18/34/50/101 backbone (paper §3.1) in torchvision's layout, NHWC.

Parameter names follow torchvision's state dict (`conv1`, `bn1`, `layer{s}_{b}/conv{i}`,
`downsample_conv`, `downsample_bn`) so `gldfa_jax.pretrained` maps ImageNet weights one to one.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gldfa_jax import conv as convolution

# depth -> (block kind, blocks per stage), as in He et al. 2016 Table 1.
STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = {"basic": 1, "bottleneck": 4}
MIN_CHANNELS = 8

# torchvision initialises convolutions with Kaiming-normal (fan_out, ReLU gain).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled_channels(channels: int, width_multiplier: float) -> int:
    """Channel count after the width multiplier (never below MIN_CHANNELS)."""
    return max(MIN_CHANNELS, int(round(channels * width_multiplier)))


def output_channels(depth: int, width_multiplier: float = 1.0) -> int:
    """Channels of the backbone's last feature map (2048 for ResNet-50 at full width)."""
    kind, _ = STAGES[depth]
    return scaled_channels(STAGE_PLANES[-1], width_multiplier) * EXPANSION[kind]


def conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    # Explicit symmetric padding: 'SAME' pads asymmetrically for stride 2 on even sizes,
    # which would not match PyTorch (and its pretrained weights).
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_init,
        # XLA's convolution, except 1×1 ones traced for CPU: matmuls there, whose filter gradients XLA:CPU computes
        # 2-21× faster (gldfa_jax.conv). The parameters stay nn.Conv's.
        conv_general_dilated=convolution.conv_general_dilated,
        name=name,
    )


def batch_norm(
    train: bool, dtype: Any, axis_name: str | None, name: str, use_bias: bool = True, axis: int | tuple = -1
) -> nn.BatchNorm:
    # Flax momentum 0.9 (weight of the old statistic) = PyTorch momentum 0.1; eps as in PyTorch. `axis`: the feature
    # axes, statistics are kept per entry of them.
    return nn.BatchNorm(
        use_running_average=not train,
        axis=axis,
        momentum=0.9,
        epsilon=1e-5,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        axis_name=axis_name,
        name=name,
    )


class Block(nn.Module):
    """Basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) residual block; the stride sits on the 3×3."""

    kind: str
    planes: int
    stride: int
    downsample: bool
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda name: batch_norm(train, self.dtype, self.axis_name, name)
        out_channels = self.planes * EXPANSION[self.kind]
        if self.kind == "basic":
            y = nn.relu(bn("bn1")(conv(self.planes, 3, self.stride, self.dtype, "conv1")(x)))
            y = bn("bn2")(conv(self.planes, 3, 1, self.dtype, "conv2")(y))
        else:
            y = nn.relu(bn("bn1")(conv(self.planes, 1, 1, self.dtype, "conv1")(x)))
            y = nn.relu(bn("bn2")(conv(self.planes, 3, self.stride, self.dtype, "conv2")(y)))
            y = bn("bn3")(conv(out_channels, 1, 1, self.dtype, "conv3")(y))
        if self.downsample:
            x = bn("downsample_bn")(conv(out_channels, 1, self.stride, self.dtype, "downsample_conv")(x))
        return nn.relu(y + x)


def stem_pool(x: jax.Array) -> jax.Array:
    """3×3 max pooling, stride 2, padding 1 on each side (torchvision's stem): [B, H, W, C] -> [B, H/2, W/2, C].

    Written as -inf padding and a VALID window, the one form the ONNX converter maps to MaxPool (jax2onnx takes
    flax pooling padding as "SAME"/"VALID" only; gldfa_jax.export); the same values and gradients as
    nn.max_pool(..., padding=((1, 1), (1, 1))) (tests/test_resnet.py).
    """
    return nn.max_pool(
        jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf), window_shape=(3, 3), strides=(2, 2)
    )


class ResNet(nn.Module):
    """Images [B, H, W, 3] -> feature map [B, H/s, W/s, C], s = 16 with last_stride 1, else 32.

    C = 2048 for depth 50/101 (512 for 18/34) times `width_multiplier`. Params are float32,
    computation runs in `dtype`. `axis_name` synchronises BatchNorm statistics across devices.
    """

    depth: int = 50
    last_stride: int = 1
    width_multiplier: float = 1.0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        if self.depth not in STAGES:
            raise ValueError(f"depth={self.depth} is not supported; use one of {sorted(STAGES)}.")
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride={self.last_stride} must be 1 (paper §3.1) or 2 (plain ResNet).")
        kind, blocks = STAGES[self.depth]
        x = x.astype(self.dtype)
        x = conv(scaled_channels(64, self.width_multiplier), 7, 2, self.dtype, "conv1")(x)
        x = nn.relu(batch_norm(train, self.dtype, self.axis_name, "bn1")(x))
        x = stem_pool(x)
        in_channels = x.shape[-1]
        for stage, (planes, num_blocks) in enumerate(zip(STAGE_PLANES, blocks)):
            planes = scaled_channels(planes, self.width_multiplier)
            for b in range(num_blocks):
                stride = 1 if b > 0 or stage == 0 else (self.last_stride if stage == 3 else 2)
                downsample = b == 0 and (stride != 1 or in_channels != planes * EXPANSION[kind])
                x = Block(kind, planes, stride, downsample, self.dtype, self.axis_name, name=f"layer{stage + 1}_{b}")(
                    x, train
                )
                in_channels = planes * EXPANSION[kind]
        return x
