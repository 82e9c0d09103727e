"""MobileNetV2 backbone (Sandler et al., CVPR 2018) in torchvision's layout, NHWC: the ImageNet-initialised
backbone a CPU can fine-tune (torchvision's ImageNet weights: `python -m gldfa_jax.pretrained fetch mobilenet_v2`).

Parameter names are torchvision's state-dict paths with "." -> "_" (`features_0_0` the stem conv, `features_0_1`
its BN, `features_2_conv_1_0` block 2's depthwise conv, `features_18_1` the last BN), so `gldfa_jax.pretrained`
maps ImageNet weights one to one.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gldfa_jax.resnet import batch_norm, conv, conv_init

# Sandler et al. Table 2: (expansion t, channels c, blocks n, first stride s) per stage, after the 32-channel stem.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
LAST_STRIDED_STAGE = 5  # the 160-channel stage: model.last_stride replaces its stride 2 (output stride 16)


def divisible_channels(channels: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to a multiple of 8, never more than 10 % below `channels`."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def output_channels(width_multiplier: float = 1.0) -> int:
    """Channels of the last feature map: 1280 at width 1.0 (torchvision never narrows the last conv)."""
    return divisible_channels(LAST_CHANNELS * max(1.0, width_multiplier))


class DepthwiseConv3x3(nn.Module):
    """3×3 depthwise conv, padding 1 (torchvision's): [B, H, W, C] -> [B, H/s, W/s, C], kernel [3, 3, 1, C] as
    nn.Conv(feature_group_count=C) stores it.

    Written as nine shifted multiply-adds, not a grouped convolution: XLA:CPU runs a grouped convolution's forward
    and backward passes 3-20× slower than these fused elementwise ops (benchmarks/depthwise_conv.py): the
    MobileNetV2 train step at 128×64 went from about 2 s to 0.7 s on 2 cores. The values and gradients equal the
    convolution's (tests/test_mobilenet.py); on GPUs XLA fuses the nine taps into one kernel.
    """

    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", conv_init, (3, 3, 1, x.shape[-1]), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        s, (h, w) = self.stride, ((x.shape[1] - 1) // self.stride + 1, (x.shape[2] - 1) // self.stride + 1)
        taps = [
            padded[:, i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s] * kernel[i, j, 0]
            for i in range(3)
            for j in range(3)
        ]
        return sum(taps[1:], taps[0])


class MobileNetV2(nn.Module):
    """Images [B, H, W, 3] -> feature map [B, H/s, W/s, C], s = 16 with last_stride 1, else 32; C = 1280 at
    width 1.0. Params are float32, computation runs in `dtype`; `axis_name` syncs BatchNorm across devices."""

    last_stride: int = 1
    width_multiplier: float = 1.0
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.last_stride not in (1, 2):
            raise ValueError(f"last_stride={self.last_stride} must be 1 (paper §3.1) or 2 (plain MobileNetV2).")

        def conv_bn(y, features, kernel, stride, name, depthwise=False):
            # torchvision's Conv2dNormActivation: conv `name_0`, BN `name_1`, ReLU6.
            if depthwise:
                y = DepthwiseConv3x3(stride, self.dtype, name=f"{name}_0")(y)
            else:
                y = conv(features, kernel, stride, self.dtype, f"{name}_0")(y)
            y = batch_norm(train, self.dtype, self.axis_name, f"{name}_1")(y)
            return jnp.clip(y, 0, 6)

        x = conv_bn(x.astype(self.dtype), divisible_channels(STEM_CHANNELS * self.width_multiplier), 3, 2, "features_0")
        index = 1
        for stage, (expansion, channels, blocks, first_stride) in enumerate(STAGES):
            out_channels = divisible_channels(channels * self.width_multiplier)
            for b in range(blocks):
                stride = 1 if b > 0 else (self.last_stride if stage == LAST_STRIDED_STAGE else first_stride)
                name = f"features_{index}_conv"
                hidden = x.shape[-1] * expansion
                y, layer = x, 0
                if expansion != 1:  # 1×1 expansion; torchvision leaves it out when t = 1
                    y, layer = conv_bn(y, hidden, 1, 1, f"{name}_0"), 1
                y = conv_bn(y, hidden, 3, stride, f"{name}_{layer}", depthwise=True)
                # The linear bottleneck: a 1×1 projection and BN, no ReLU.
                y = conv(out_channels, 1, 1, self.dtype, f"{name}_{layer + 1}")(y)
                y = batch_norm(train, self.dtype, self.axis_name, f"{name}_{layer + 2}")(y)
                x = x + y if stride == 1 and x.shape[-1] == out_channels else y
                index += 1
        return conv_bn(x, output_channels(self.width_multiplier), 1, 1, f"features_{index}")
