"""The PyTorch side of benchmarks.device_check: the independent reference GLDFA-Net (benchmarks.torch_reference:
the ResNet with last stride 1, the same heads, losses and optimisers) trained on the device the JAX step ran on, in
the same process, at the same batches and input size.

Variants: float32; AMP bfloat16 with channels_last; that compiled with torch.compile (CUDA only). One step:
the forward (under autocast for AMP) with its outputs cast to float32 for the losses, as the JAX step gathers
them in float32, then `torch_reference.update` (eq. 12, backward, Adam and the centres' SGD). The input is one
fixed pre-augmented float batch on the device (train_step.batch), so the JAX fused step does a little more work
(it augments uint8 images on the device: a few elementwise passes). cudnn.benchmark is on: with fixed shapes cuDNN
picks its fastest kernels, as a tuned PyTorch run would; float32 convolutions run in TF32 on Ampere and later
(PyTorch's default, torch.backends.cudnn.allow_tf32), as XLA's do at its default precision.
"""

import dataclasses
import gc

from benchmarks import train_step


class Skipped(Exception):
    """A section that cannot run here: benchmarks.device_check records it as skipped, with this message."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    amp: bool  # autocast to bfloat16 (the losses stay float32)
    channels_last: bool  # NHWC memory layout: the tensor cores' native one
    compile: bool  # torch.compile (inductor) of the network's forward and backward


VARIANTS = (
    Variant("float32", False, False, False),
    Variant("AMP bfloat16, channels_last", True, True, False),
    Variant("torch.compile, AMP bfloat16, channels_last", True, True, True),
)


def version() -> str | None:
    """torch's version, or None where it does not import (its sections are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def reference_step(config, height: int, width: int, variant: Variant, device: str):
    """(step, last): a closure running one reference train step on a fixed batch and waiting for it, and the dict
    of its last loss parts. The closure holds the network, optimisers and batch: dropping it frees them."""
    import torch

    from benchmarks import torch_reference as ref

    torch.manual_seed(0)
    layout = torch.channels_last if variant.channels_last else torch.contiguous_format
    net = ref.GLDFANet(config.model, train_step.NUM_CLASSES).to(device, memory_format=layout).train()
    opt, center_opt, centers = ref.optimizers(net, config, train_step.NUM_CLASSES, device=device)
    images, labels = train_step.batch(config, height, width)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous(memory_format=layout)  # NCHW view
    y = torch.from_numpy(labels).long().to(device)
    forward = torch.compile(net, dynamic=False) if variant.compile else net
    last = {}

    def step():
        with torch.autocast(device, torch.bfloat16, enabled=variant.amp):
            out = tuple(o.float() for o in forward(x))
        last.update(ref.update(out, y, centers, opt, center_opt, config))
        if device == "cuda":
            torch.cuda.synchronize()  # the step's kernels are done: the time is the step's

    return step, last


def time_train_steps(config, height: int, width: int, variant: Variant, steps: int) -> tuple:
    """Time the reference's train step on one P×K batch of `config` (data.num_identities × data.num_instances)
    -> (first step s (cuDNN's autotuning; torch.compile's compile), [s of each of the next `steps`],
    {"id_loss", "torch_peak_bytes"} ("n/a" without CUDA)). Raises Skipped where torch does not import, or for
    torch.compile without CUDA."""
    if version() is None:
        raise Skipped("torch does not import here: the PyTorch side by side needs it (pip install torch)")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if variant.compile and device == "cpu":
        raise Skipped(
            "torch.compile is timed on CUDA only: on a CPU inductor builds C++ for minutes and the number would "
            "say nothing about the GPU"
        )
    torch.backends.cudnn.benchmark = True
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step, last = reference_step(config, height, width, variant, device)
    try:
        first, times = train_step.time_steps(step, steps)
        peak = torch.cuda.max_memory_allocated() if device == "cuda" else "n/a"
    finally:
        del step  # the network, optimisers and batch with it
        if variant.compile:
            torch._dynamo.reset()  # drop the compiled graphs, which hold the network too
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()  # give the cached blocks back: the JAX sections after this one allocate too
    return first, times, {"id_loss": last["id"].item(), "torch_peak_bytes": peak}
