#!/usr/bin/env bash
# Downloads into the git-ignored wheels/ folder the Python packages that benchmarks.device_check needs on the GPU
# machine and that machine's image lacks, for its Python 3.12, then prints the device call that carries them.
#
#     bash benchmarks/device_wheels.sh
#
# The image (package list read on 2026-11-17) holds jax with CUDA, flax, optax, orbax-checkpoint, chex, scipy,
# torch, triton, matplotlib, PyYAML, protobuf, Pillow and tqdm, but neither ml_collections (the experiment configs)
# nor tensorboardX (gldfa_jax.metric_writer, which the training loop of the float16 run imports). Both are pure
# Python and what they import is in the image, so --no-deps keeps the folder to these two files (about 160 KB).
# The real crops of the float16 run travel too once benchmarks/pack_crops.py has made data/cuhk03_real_packed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(ml_collections==1.1.0 tensorboardX==2.6.5)
CROPS=data/cuhk03_real_packed
LIMIT_MIB=64  # the device tool's working tree, carried paths included

python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 -d wheels "${PACKAGES[@]}"
# The exact files, not wheels/*.whl: an older version left in the folder would make pip refuse the install.
files=""
for spec in "${PACKAGES[@]}"; do
    name=${spec%%==*}
    version=${spec##*==}
    file=$(ls wheels/ | grep -i "^${name}-${version}-" | head -n 1)
    files+=" wheels/${file}"
done

carry='["wheels"]'
carried=(wheels)
if [ -d "$CROPS" ]; then
    carry="[\"wheels\", \"$CROPS\"]"
    carried+=("$CROPS")
else
    echo "no $CROPS: the float16 run will train on noise. To train it on the real crops, make them first:"
    echo "    python -m benchmarks.pack_crops --src ../shared/data/cuhk03_real --out $CROPS"
fi
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -n 1 | cut -f 1)
extra=$(du -cb "${carried[@]}" | tail -n 1 | cut -f 1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
echo "travels: $(mib $((tree + extra))) MiB of the ${LIMIT_MIB} MiB limit (tree $(mib "$tree"), ${carried[*]} $(mib "$extra"))"
if [ $((tree + extra)) -ge $((LIMIT_MIB * 1048576)) ]; then
    echo "over the limit: carry less" >&2
    exit 1
fi

echo
echo "device call: run with timeout_s=540, carry=${carry}, command:"
echo "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site${files}" \
    "&& export PYTHONPATH=/tmp/site || exit; set -o pipefail; PYTHONUNBUFFERED=1 python3 -m benchmarks.device_check" \
    "--out \$OUT 2>&1 | tee \$OUT/device_check.log"
