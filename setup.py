"""Build ac4k_kernel for exactly one GPU architecture, chosen at install time.

    pip install --no-build-isolation .          # arch from nvidia-smi
    AC4K_CUDA_ARCH=sm90a pip install --no-build-isolation .   # no GPU needed
    AC4K_CUDA_ARCH=sm89 pip install --no-build-isolation .    # Ada (sm_89 SASS + compute_89 PTX)
    AC4K_CUDA_ARCH=sm120 ...                                  # the sm89 folder with sm_120 SASS

Env: AC4K_BACKEND (cuda|rocm), AC4K_CUDA_ARCH, AC4K_ROCM_ARCH, MAX_JOBS, CUDA_HOME.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "build_tools"))
import ac4k_build as ab  # noqa: E402

VERSION = "0.1.0"


def log(msg: str) -> None:
    print(f"[ac4k_kernel] {msg}", flush=True)


def main() -> None:
    try:
        backend = ab.detect_backend()
        arch, sass = ab.detect_cuda_target()
        cuda_home = ab.find_cuda_home()
    except ab.BuildConfigError as e:
        sys.exit(f"[ac4k_kernel] build stopped: {e}")
    if cuda_home is None:
        sys.exit("[ac4k_kernel] build stopped: no CUDA toolkit found; set CUDA_HOME to its root "
                 "(the folder holding bin/nvcc and include/cuda_runtime.h)")
    # torch reads CUDA_HOME when cpp_extension is imported, so it must be right before that import.
    os.environ["CUDA_HOME"] = cuda_home

    try:
        from torch.utils import cpp_extension
    except ImportError:
        sys.exit("[ac4k_kernel] build stopped: torch is needed to build; install it first and use "
                 "pip install --no-build-isolation .")

    jobs = os.environ.get("MAX_JOBS") or str(ab.default_max_jobs())
    os.environ["MAX_JOBS"] = jobs
    nvcc_threads = max(1, (os.cpu_count() or 2) // int(jobs))
    ccache = shutil.which("ccache")
    if ccache and "PYTORCH_NVCC" not in os.environ:
        os.environ["PYTORCH_NVCC"] = f"{ccache} {os.path.join(cuda_home, 'bin', 'nvcc')}"
    cxx_cached = bool(ccache) and hasattr(cpp_extension, "_wrap_compiler")
    ninja = cpp_extension.is_ninja_available()

    log(f"version {VERSION}: backend={backend} arch={arch} CUDA_HOME={cuda_home}")
    log("nvcc targets: " + " ".join(ab.gencode_flags(arch, sass)))
    log(f"build acceleration: ninja={'yes' if ninja else 'NO (pip install ninja)'} MAX_JOBS={jobs} "
        f"nvcc --threads={nvcc_threads} -pipe "
        f"ccache={'nvcc' + (' + c++' if cxx_cached else '') + ' via ' + ccache if ccache else 'not on PATH'}")

    sources = sorted(glob.glob(os.path.join("lib", backend, "common", "*.cu"))
                     + glob.glob(os.path.join("lib", backend, arch, "*.cu")))
    sources.append(os.path.join("lib", f"{backend}_bindings.cc"))
    log("sources: " + " ".join(sources))

    ext = cpp_extension.CUDAExtension(
        name="ac4k_kernel._cuda_ops",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "include"), os.path.join(ROOT, "lib", backend)],
        extra_compile_args={"cxx": ab.cxx_flags(arch, sass), "nvcc": ab.nvcc_flags(arch, nvcc_threads, sass)},
    )
    setup(
        name="ac4k_kernel",
        version=VERSION,
        packages=find_packages("python"),
        package_dir={"": "python"},
        ext_modules=[ext],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=ninja)},
        zip_safe=False,
    )


main()
