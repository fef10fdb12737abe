"""Install-time detection for ac4k_kernel: backend, GPU architecture, CUDA toolkit, build speed-ups.

Free of torch and of setuptools so that tests can import it on any machine.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Callable, Dict, List, Optional, Tuple

# What this source tree implements. An arch or backend outside this table stops the build.
IMPLEMENTED: Dict[str, tuple] = {"cuda": ("sm90a", "sm89"), "rocm": ()}
# Archs we know by name (planned or not), for helpful messages.
KNOWN_CUDA_ARCHS = ("sm80", "sm86", "sm89", "sm90a", "sm100", "sm120")
# nvcc targets per arch folder: Hopper's wgmma/setmaxnreg need the 'a' target. sm89 (Ada) is
# compiled as compute_89 code: SASS for the target GPU plus the compute_89 PTX itself, so that an
# sm89 build also loads (JIT-compiled by the driver) on a newer GPU, e.g. the H100 it is tested on.
GENCODE = {"sm90a": ["-gencode=arch=compute_90a,code=sm_90a"],
           "sm89": ["-gencode=arch=compute_89,code=sm_89", "-gencode=arch=compute_89,code=compute_89"]}
# Archs without a folder of their own, built from another arch's folder (its compute_XY code) with
# SASS for the GPU itself: consumer Blackwell runs Ada's mma.sync kernels until lib/cuda/sm120 exists.
BUILT_AS = {"sm120": "sm89"}
# Compute capability of the SASS each arch name stands for.
SASS_CC = {"sm89": "8.9", "sm90a": "9.0", "sm120": "12.0"}


class BuildConfigError(RuntimeError):
    """A build that cannot be configured; the message says what to do."""


def _supported_text() -> str:
    pairs = [f"{b}/{a}" for b, archs in IMPLEMENTED.items() for a in archs]
    return ", ".join(pairs)


def detect_backend(env: Optional[dict] = None, which: Callable[[str], Optional[str]] = shutil.which) -> str:
    """AC4K_BACKEND if set, else 'cuda' when nvcc is on PATH, else 'rocm' when hipcc is, else an error."""
    env = os.environ if env is None else env
    forced = env.get("AC4K_BACKEND", "").strip().lower()
    if forced:
        if forced not in IMPLEMENTED:
            raise BuildConfigError(
                f"AC4K_BACKEND={forced!r} is not a backend ac4k_kernel knows; use one of "
                f"{', '.join(IMPLEMENTED)} (implemented today: {_supported_text()})")
        backend = forced
    elif which("nvcc"):
        backend = "cuda"
    elif which("hipcc"):
        backend = "rocm"
    else:
        raise BuildConfigError(
            "no GPU compiler found: neither nvcc (CUDA) nor hipcc (ROCm) is on PATH. Install the CUDA "
            "toolkit and put its bin/ on PATH, or set AC4K_BACKEND and CUDA_HOME.")
    if not IMPLEMENTED[backend]:
        raise BuildConfigError(
            f"backend {backend!r} has no implementation yet; supported backend/arch: {_supported_text()}")
    return backend


def normalize_cuda_arch(spec: str) -> str:
    """Map what a user types (sm90a, sm_90a, 90a, sm90, 9.0, compute_90a, 12.0, ...) to our arch names."""
    s = spec.strip().lower().replace("-", "_")
    m = re.fullmatch(r"(\d+)\.(\d+)", s)
    if m:
        num = int(m.group(1)) * 10 + int(m.group(2))
        suffix = ""
    else:
        m = re.fullmatch(r"(?:sm_?|compute_?)?(\d{2,3})([af]?)", s)
        if not m:
            raise BuildConfigError(
                f"cannot read the CUDA arch {spec!r}; write it like sm90a, sm_90a, 90a or 9.0 "
                f"(implemented today: {_supported_text()})")
        num, suffix = int(m.group(1)), m.group(2)
    if num == 90:
        return "sm90a"  # plain sm90 cannot run our wgmma kernels; Hopper always builds sm90a
    name = f"sm{num}"
    return name if name in KNOWN_CUDA_ARCHS or not suffix else f"sm{num}{suffix}"


def query_gpu_compute_caps(run: Callable = subprocess.run) -> List[str]:
    """Compute capabilities of the visible GPUs via nvidia-smi ([] when there is none)."""
    try:
        res = run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                  capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if res.returncode != 0:
        return []
    return [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]


def detect_cuda_arch(env: Optional[dict] = None, query: Callable[[], List[str]] = query_gpu_compute_caps) -> str:
    """The arch folder to compile (see detect_cuda_target)."""
    return detect_cuda_target(env, query)[0]


def detect_cuda_target(env: Optional[dict] = None,
                       query: Callable[[], List[str]] = query_gpu_compute_caps) -> Tuple[str, str]:
    """(arch folder, SASS arch): AC4K_CUDA_ARCH if set, else the GPU's compute capability; the arch
    must be implemented, or be built from one that is (BUILT_AS: sm120 -> the sm89 folder, SASS sm120)."""
    env = os.environ if env is None else env
    spec = env.get("AC4K_CUDA_ARCH", "").strip()
    if spec:
        arch = normalize_cuda_arch(spec)
        source = f"AC4K_CUDA_ARCH={spec}"
    else:
        caps = sorted(set(query()))
        if not caps:
            raise BuildConfigError(
                "no GPU found to detect the arch from (nvidia-smi gave nothing). On a machine without "
                f"a GPU set AC4K_CUDA_ARCH, e.g. AC4K_CUDA_ARCH=sm90a (implemented: {_supported_text()})")
        archs = sorted({normalize_cuda_arch(c) for c in caps})
        if len(archs) > 1:
            raise BuildConfigError(
                f"GPUs of different archs are visible ({', '.join(caps)}); ac4k_kernel builds one arch. "
                "Choose it with AC4K_CUDA_ARCH (or CUDA_VISIBLE_DEVICES).")
        arch = archs[0]
        source = f"nvidia-smi compute_cap {caps[0]}"
    sass = arch
    arch = BUILT_AS.get(arch, arch)
    if arch not in IMPLEMENTED["cuda"]:
        raise BuildConfigError(
            f"CUDA arch {arch} (from {source}) has no implementation in ac4k_kernel yet; "
            f"supported backend/arch: {_supported_text()} (sm120 builds the sm89 folder)")
    return arch, sass


def gencode_flags(arch: str, sass: Optional[str] = None) -> List[str]:
    """nvcc -gencode flags of an arch folder; sass (an arch built from it, BUILT_AS) replaces the
    folder's own SASS target by the GPU's, the embedded PTX stays the folder's."""
    flags = list(GENCODE[arch])
    if sass is None or sass == arch:
        return flags
    if BUILT_AS.get(sass) != arch:
        raise BuildConfigError(f"{sass} is not built from the {arch} folder")
    num = sass[2:]
    return [f.replace(f"code=sm_{arch[2:]}", f"code=sm_{num}") for f in flags]


def sass_cc(arch: str, sass: Optional[str] = None) -> str:
    """Compute capability ("8.9", "12.0") of the SASS in a build of arch (and sass)."""
    return SASS_CC[sass or arch]


def _has_toolkit(root: str) -> bool:
    return os.path.isfile(os.path.join(root, "bin", "nvcc")) and os.path.isfile(
        os.path.join(root, "include", "cuda_runtime.h"))


def find_cuda_home(env: Optional[dict] = None, which: Callable[[str], Optional[str]] = shutil.which,
                   run: Callable = subprocess.run) -> Optional[str]:
    """The real CUDA toolkit root.

    CUDA_HOME / CUDA_PATH when they hold a toolkit; else the one behind nvcc on PATH. That nvcc may
    be a wrapper script outside the toolkit (conda, minimal images), so when its parent folder is no
    toolkit we ask nvcc itself (`nvcc --dryrun` prints the folder it really runs from).
    """
    env = os.environ if env is None else env
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = env.get(var)
        if root and _has_toolkit(root):
            return os.path.abspath(root)
    nvcc = which("nvcc")
    if nvcc:
        root = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        if _has_toolkit(root):
            return root
        try:
            res = run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                      capture_output=True, text=True, timeout=60)
            out = res.stdout + res.stderr
        except (OSError, subprocess.SubprocessError):
            out = ""
        m = re.search(r"^#\$ _HERE_=(.+)$", out, re.M) or re.search(r"^#\$ TOP=(.+)$", out, re.M)
        if m:
            here = m.group(1).strip()
            root = os.path.normpath(os.path.join(here, "..") if here.rstrip("/").endswith("bin") else here)
            if _has_toolkit(root):
                return root
    for root in ("/usr/local/cuda",):
        if _has_toolkit(root):
            return root
    return None


def default_max_jobs(cpu_count: Optional[int] = None) -> int:
    """Half the cores (at least 1): nvcc jobs are memory-hungry."""
    n = cpu_count if cpu_count is not None else (os.cpu_count() or 2)
    return max(1, n // 2)


def _sass_define(arch: str, sass: Optional[str]) -> str:
    # 10 * major + minor (89, 90, 120): the binding reports it (module attribute __sass_cc__), the
    # import check compares it with the GPU's compute capability.
    major, minor = sass_cc(arch, sass).split(".")
    return f"-DAC4K_SASS_CC={int(major) * 10 + int(minor)}"


def nvcc_flags(arch: str, threads: int, sass: Optional[str] = None) -> List[str]:
    return [
        "-O3", *gencode_flags(arch, sass), f"-DAC4K_ARCH_{arch.upper()}=1", _sass_define(arch, sass),
        "--expt-relaxed-constexpr", "-lineinfo", f"--threads={threads}", "-Xcompiler=-pipe",
    ]


def cxx_flags(arch: str, sass: Optional[str] = None) -> List[str]:
    return ["-O3", "-pipe", f"-DAC4K_ARCH_{arch.upper()}=1", _sass_define(arch, sass)]
