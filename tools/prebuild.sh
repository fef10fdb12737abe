#!/usr/bin/env bash
# Builds the sm90a extension here for the device machine (its python 3.12 and torch 2.11.0+cu130),
# so that a device call spends none of its minutes compiling; tools/gpu_check.sh installs the
# result with PREBUILT=FILE (and PREBUILT_VARIANTS=DIR for <variant>.so.xz). Carry the file in an
# ignored folder (e.g. .prebuilt/, listed in .git/info/exclude).
#   tools/prebuild.sh SRC_DIR OUT.so.xz        (SRC_DIR: a checkout, e.g. a worktree of a variant)
# Needs a python3.12 (pyenv's here) and PyPI. torch is installed without its CUDA wheels: its import
# finds those libraries in NVIDIA_LIBS (default: the CI venv's nvidia packages).
set -euo pipefail
src=$(cd "$1" && pwd); out=$(realpath -m "$2")
V=${PREBUILD_VENV:-/tmp/ac4k-venv312}
if [ ! -x "$V/bin/python" ]; then
  # A pyenv shim named python3.12 may exist and fail when 3.12 is not the selected version.
  py=$(command -v python3.12 2> /dev/null) && "$py" --version > /dev/null 2>&1 ||
    py=$(ls /root/.pyenv/versions/3.12*/bin/python3.12 | head -1)
  "$py" -m venv "$V"
  "$V/bin/pip" install -q --no-deps "torch==${DEVICE_TORCH:-2.11.0}"
  "$V/bin/pip" install -q numpy ninja "setuptools<82" wheel typing_extensions sympy filelock jinja2 networkx fsspec
fi
libs=$(find "${NVIDIA_LIBS:-/tmp/ac4k-ci-venv/lib/python3.11/site-packages/nvidia}" -name lib -type d | tr '\n' ':')
cd "$src"
LD_LIBRARY_PATH=$libs PATH=$V/bin:$PATH AC4K_CUDA_ARCH=sm90a MAX_JOBS=${MAX_JOBS:-2} \
  python setup.py build_ext --inplace > build312.log 2>&1 || { tail -30 build312.log; exit 1; }
so=python/ac4k_kernel/_cuda_ops.cpython-312-x86_64-linux-gnu.so
LD_LIBRARY_PATH=$libs PYTHONPATH=python "$V/bin/python" -c 'import ac4k_kernel; i = ac4k_kernel.get_info(); assert i["extension_error"] is None, i; print(i["torch"], i["arch"], len(i["ops"]), "ops")'
mkdir -p "$(dirname "$out")"
xz -T2 -6 -c "$so" > "$out"
echo "$out: $(du -h "$out" | cut -f1)"
