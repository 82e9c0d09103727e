"""The tables of benchmarks.device_check: device_check.md from the report (which device_check.json holds), one
table per kind of section, and the JAX / PyTorch side by side.
"""

import json
import math
import os

from benchmarks.device_sections import FLOAT16_SETTLING_STEPS


def _gib(value) -> str:
    return f"{value / 2**30:.2f}" if isinstance(value, int) else "n/a"


def _by_mode(results: dict) -> str:
    return ", ".join(f"{mode} {r['mAP']:.1f} / {r['rank1']:.1f}" for mode, r in results.items())


# (kind, title, columns (header, key, format string or function)); every table ends with wall s, the JAX process's
# peak device memory and the status. "compile s" in each: the first call's time minus a steady call's.
TABLES = (
    (
        "train",
        "Train step: `train.make_batch_step` (on-device augmentation, forward/backward, GLDFA losses, Adam; float16 "
        "with its dynamic loss scale), K = 4; img/s from the median step; compile s: XLA's lower + compile alone; "
        "MFU: XLA's FLOP count of the compiled step ÷ the median step ÷ the device's peak for the dtype",
        (
            ("batch", "batch", "{}"),
            ("dtype", "dtype", "{}"),
            ("img/s", "images_per_s", "{:,.1f}"),
            ("step ms (median)", "step_ms", "{:,.1f}"),
            ("step ms (min)", "step_min_ms", "{:,.1f}"),
            ("compile s", "compile_s", "{:.1f}"),
            ("compile + 1st step s", "compile_and_first_step_s", "{:.1f}"),
            ("GFLOP/img", "gflop_per_image", "{:,.3g}"),
            ("MFU", "mfu", "{:.1%}"),
            ("loss", "loss", "{:.3f}"),
        ),
    ),
    (
        "torch",
        "PyTorch reference (`benchmarks/torch_reference.py`, `benchmarks/device_torch.py`), the same model, batch "
        "and device; compile s: first step minus the median (cuDNN autotuning; torch.compile's compile); MFU from "
        "the JAX step's XLA FLOP count at the same batch",
        (
            ("batch", "batch", "{}"),
            ("variant", "variant", "{}"),
            ("img/s", "images_per_s", "{:,.1f}"),
            ("step ms (median)", "step_ms", "{:,.1f}"),
            ("step ms (min)", "step_min_ms", "{:,.1f}"),
            ("compile s", "compile_s", "{:.1f}"),
            ("MFU", "mfu", "{:.1%}"),
            ("ID loss", "id_loss", "{:.3f}"),
            ("torch peak GiB", "torch_peak_bytes", _gib),
        ),
    ),
    (
        "float16_run",
        "float16 training run: `gldfa_jax.loop` (setup, train_epoch) with model.dtype float16 and dynamic loss "
        "scaling from random weights, the config's optimiser; skipped = updates dropped for overflowing gradients; "
        "compile s: the first metric fetch's time minus its steps at the steady rate",
        (
            ("data", "data", "{}"),
            ("batch", "batch", "{}"),
            ("steps", "steps", "{}"),
            ("skipped", "skipped", "{}"),
            (f"skipped after step {FLOAT16_SETTLING_STEPS}", "skipped_after_settling", "{}"),
            ("final loss scale", "loss_scale", "{:g}"),
            ("loss first → last", "losses", "{}"),
            ("non-finite params", "nonfinite_params", "{}"),
            ("img/s", "images_per_s", "{:,.1f}"),
            ("compile s", "compile_s", "{:.1f}"),
        ),
    ),
    (
        "features",
        "Feature extraction: `features.extract_features` (uint8 host images -> numpy features) and its "
        "jitted `_features` on a device-resident batch",
        (
            ("dtype", "dtype", "{}"),
            ("images", "images", "{:,}"),
            ("img/s end to end", "images_per_s", "{:,.1f}"),
            ("img/s on device", "device_images_per_s", "{:,.1f}"),
            ("compile s", "compile_s", "{:.1f}"),
        ),
    ),
    (
        "distance",
        "LSA distance: `distances.pairwise_distance` (k = 8, d = 256, W = 4, block 2048), synthetic features; "
        "compile s: the warm-up call minus its share of the timed work",
        (
            ("set", "set", "{}"),
            ("Q × G", "size", "{}"),
            ("s", "seconds", "{:.2f}"),
            ("M pairs/s", "mega_pairs_per_s", "{:,.1f}"),
            ("compile s", "compile_s", "{:.2f}"),
        ),
    ),
    (
        "eval",
        "Evaluation from features: `evaluation.evaluate`, every mode of eval.modes with the config's "
        "re-ranking, synthetic identity-clustered features; cold = first call (compiles included), warm = the "
        "same call again, compile s = cold - warm",
        (
            ("set", "set", "{}"),
            ("Q × G", "size", "{}"),
            ("cold s", "cold_s", "{:.2f}"),
            ("warm s", "warm_s", "{:.2f}"),
            ("compile s", "compile_s", "{:.2f}"),
            ("mAP / R-1 by mode", "results", _by_mode),
        ),
    ),
)
KINDS = tuple(kind for kind, _, _ in TABLES)  # what --only selects


def side_by_side(sections: list) -> list:
    """Per batch with both: JAX's train img/s (bfloat16, else its first dtype run), PyTorch's best variant, and
    the ratio JAX / PyTorch-best."""
    ok = [s for s in sections if s["status"] == "ok"]
    rows = []
    for batch in sorted({s["params"]["batch"] for s in ok if s["kind"] == "torch"}):
        jax_rows = [s for s in ok if s["kind"] == "train" and s["params"]["batch"] == batch]
        torch_rows = [s for s in ok if s["kind"] == "torch" and s["params"]["batch"] == batch]
        if not jax_rows:
            continue
        ours = next((s for s in jax_rows if s["params"].get("dtype") == "bfloat16"), jax_rows[0])
        best = max(torch_rows, key=lambda s: s["metrics"]["images_per_s"])
        jax_rate, torch_rate = ours["metrics"]["images_per_s"], best["metrics"]["images_per_s"]
        rows.append(
            {
                "batch": batch,
                "jax_dtype": ours["params"]["dtype"],
                "jax_images_per_s": jax_rate,
                "torch_variant": best["params"]["variant"],
                "torch_images_per_s": torch_rate,
                "ratio": jax_rate / torch_rate,
            }
        )
    return rows


def _cell(fmt, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return fmt(value) if callable(fmt) else fmt.format(value)


def markdown(report: dict) -> str:
    env, sizes = report["environment"], report["sizes"]
    v, peak = env["versions"], report["peak_bytes_in_use"]
    peak = f"{_gib(peak)} GiB" if isinstance(peak, int) else "n/a (not reported by this backend)"
    lines = [
        f"# GLDFA-Net device check ({env['preset']} sizes)",
        "",
        f"{env['date']}: {env['device_kind']} ({env['platform']}, {env['device_count']} device(s)), "
        f"Python {v['python']}, " + ", ".join(f"{k} {version}" for k, version in v.items() if k != "python") + ".",
        "",
    ]
    if env["backend"] == "cpu":
        lines += [
            f"**No GPU: jax.default_backend() == 'cpu'. These are CPU numbers at the {env['preset']!r} sizes, "
            "not GPU measurements.**",
            "",
        ]
    only = f" Sections: --only {','.join(report['only'])}." if report.get("only") else ""
    lines += [
        f"ResNet-{sizes['depth']} ×{sizes['width_multiplier']}, {sizes['image'][0]}×{sizes['image'][1]}, "
        f"k = {sizes['num_stripes']}, d = {sizes['embed_dim']}, {report['config']}; model.dtype 'auto' "
        f"is {env['auto_dtype']} here. Peak device memory of JAX: {peak} (JAX peak GiB columns: this process's "
        f"peak up to the end of the row; XLA_PYTHON_CLIENT_PREALLOCATE={env['preallocate']}, so PyTorch shares the "
        f"device). Total {report['total_wall_s']:.0f} s (budget {report['budget_s']:.0f} s).{only}",
        "",
    ]
    pairs = side_by_side(report["sections"])
    if pairs:
        lines += [
            "## JAX / PyTorch, train img/s at the same batch",
            "",
            "| batch | JAX img/s (dtype) | PyTorch best img/s | PyTorch best variant | JAX / PyTorch-best |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {p['batch']} | {p['jax_images_per_s']:,.1f} ({p['jax_dtype']}) | {p['torch_images_per_s']:,.1f} | "
            f"{p['torch_variant']} | {p['ratio']:.2f}× |"
            for p in pairs
        ]
        lines.append("")
    for kind, title, columns in TABLES:
        rows = [s for s in report["sections"] if s["kind"] == kind]
        if not rows:
            continue
        headers = [h for h, _, _ in columns] + ["wall s", "JAX peak GiB", "status"]
        lines += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|---" * len(headers) + "|"]
        for s in rows:
            values = {**s["params"], **s["metrics"]}
            status = s["status"] if s["error"] is None else f"{s['status']}: {s['error'][:160]}"
            status = " ".join(status.replace("|", "/").split())  # one table row, whatever the error text holds
            cells = [_cell(fmt, values.get(key)) for _, key, fmt in columns]
            cells += [f"{s['wall_s']:.1f}", _gib(s.get("peak_bytes_in_use")), status]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write(out: str, report: dict) -> None:
    report["side_by_side"] = side_by_side(report["sections"])
    with open(os.path.join(out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "device_check.md"), "w") as f:
        f.write(markdown(report))
