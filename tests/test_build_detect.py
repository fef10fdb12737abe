"""CPU tests of the install-time detection in build_tools/ac4k_build.py (no GPU, no compile)."""
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build_tools"))
import ac4k_build as ab  # noqa: E402

BuildConfigError = ab.BuildConfigError


def which_of(*present):
    """A fake shutil.which knowing only the named programs."""
    return lambda name: f"/fake/bin/{name}" if name in present else None


def fake_run(stdout="", stderr="", returncode=0, calls=None):
    def run(cmd, **kw):
        if calls is not None:
            calls.append(list(cmd))
        return SimpleNamespace(stdout=stdout, stderr=stderr, returncode=returncode)
    return run


# ============================================================================ backend

@pytest.mark.parametrize("val", ["cuda", "CUDA", " Cuda "])
def test_detect_backend_forced_cuda(val):
    # forced: which is not even consulted
    assert ab.detect_backend({"AC4K_BACKEND": val}, which=which_of()) == "cuda"


def test_detect_backend_forced_rocm_not_implemented():
    with pytest.raises(BuildConfigError, match="rocm") as e:
        ab.detect_backend({"AC4K_BACKEND": "rocm"}, which=which_of("hipcc"))
    assert "cuda/sm90a" in str(e.value)


def test_detect_backend_forced_garbage():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_backend({"AC4K_BACKEND": "opencl"}, which=which_of("nvcc"))
    msg = str(e.value)
    assert "opencl" in msg and "cuda" in msg and "rocm" in msg


def test_detect_backend_auto_nvcc():
    assert ab.detect_backend({}, which=which_of("nvcc")) == "cuda"
    assert ab.detect_backend({}, which=which_of("nvcc", "hipcc")) == "cuda"
    assert ab.detect_backend({"AC4K_BACKEND": "  "}, which=which_of("nvcc")) == "cuda"


def test_detect_backend_auto_only_hipcc():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_backend({}, which=which_of("hipcc"))
    assert "rocm" in str(e.value) and "no implementation" in str(e.value)


def test_detect_backend_auto_nothing():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_backend({}, which=which_of())
    assert "nvcc" in str(e.value) and "hipcc" in str(e.value)


# ============================================================================ arch names

@pytest.mark.parametrize("spec", ["sm90a", "sm_90a", "90a", "sm90", "sm_90", "9.0", "compute_90a", "SM90A",
                                  " sm90a ", "sm-90a", "90"])
def test_normalize_hopper(spec):
    assert ab.normalize_cuda_arch(spec) == "sm90a"


@pytest.mark.parametrize("spec,arch", [("12.0", "sm120"), ("sm120", "sm120"), ("sm_120a", "sm120"),
                                       ("10.0", "sm100"), ("sm100a", "sm100"), ("8.9", "sm89"),
                                       ("sm_80", "sm80"), ("8.6", "sm86")])
def test_normalize_other(spec, arch):
    assert ab.normalize_cuda_arch(spec) == arch


@pytest.mark.parametrize("spec", ["banana", "", "   ", "sm", "sm_9", "9", "sm_1000", "9.0.1", "gfx942", "sm90b"])
def test_normalize_garbage(spec):
    with pytest.raises(BuildConfigError) as e:
        ab.normalize_cuda_arch(spec)
    assert "sm90a" in str(e.value)


# ============================================================================ arch detection

def _no_query():
    raise AssertionError("nvidia-smi must not be queried when AC4K_CUDA_ARCH is set")


def test_detect_cuda_arch_env_override():
    assert ab.detect_cuda_arch({"AC4K_CUDA_ARCH": "sm_90a"}, query=_no_query) == "sm90a"
    assert ab.detect_cuda_arch({"AC4K_CUDA_ARCH": "9.0"}, query=_no_query) == "sm90a"


def test_detect_cuda_arch_env_unimplemented():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_cuda_arch({"AC4K_CUDA_ARCH": "sm100"}, query=_no_query)
    msg = str(e.value)
    assert "sm100" in msg and "cuda/sm90a" in msg and "cuda/sm89" in msg and "AC4K_CUDA_ARCH" in msg


@pytest.mark.parametrize("spec", ["sm89", "sm_89", "8.9", "89", "compute_89", "SM_89"])
def test_detect_cuda_target_sm89_env(spec):
    assert ab.detect_cuda_target({"AC4K_CUDA_ARCH": spec}, query=_no_query) == ("sm89", "sm89")
    assert ab.detect_cuda_arch({"AC4K_CUDA_ARCH": spec}, query=_no_query) == "sm89"


@pytest.mark.parametrize("spec", ["sm120", "sm_120", "12.0", "sm_120a"])
def test_detect_cuda_target_sm120_builds_sm89_folder(spec):
    # no sm120 folder yet: consumer Blackwell compiles the sm89 folder with its own SASS
    assert ab.detect_cuda_target({"AC4K_CUDA_ARCH": spec}, query=_no_query) == ("sm89", "sm120")


def test_detect_cuda_target_from_gpu():
    assert ab.detect_cuda_target({}, query=lambda: ["8.9"]) == ("sm89", "sm89")
    assert ab.detect_cuda_target({}, query=lambda: ["12.0", "12.0"]) == ("sm89", "sm120")
    assert ab.detect_cuda_target({}, query=lambda: ["9.0"]) == ("sm90a", "sm90a")
    with pytest.raises(BuildConfigError, match="AC4K_CUDA_ARCH"):  # one folder, but two SASS targets
        ab.detect_cuda_target({}, query=lambda: ["8.9", "12.0"])
    with pytest.raises(BuildConfigError, match="sm86"):
        ab.detect_cuda_target({}, query=lambda: ["8.6"])


def test_detect_cuda_arch_env_garbage():
    with pytest.raises(BuildConfigError, match="banana"):
        ab.detect_cuda_arch({"AC4K_CUDA_ARCH": "banana"}, query=_no_query)


def test_detect_cuda_arch_from_gpu():
    assert ab.detect_cuda_arch({}, query=lambda: ["9.0"]) == "sm90a"
    assert ab.detect_cuda_arch({}, query=lambda: ["9.0", "9.0"]) == "sm90a"
    assert ab.detect_cuda_arch({"AC4K_CUDA_ARCH": ""}, query=lambda: ["9.0"]) == "sm90a"
    # the one-arch rule is about archs, not about how the caps are spelled
    assert ab.detect_cuda_arch({}, query=lambda: ["9.0", "90"]) == "sm90a"


def test_detect_cuda_arch_mixed_gpus():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_cuda_arch({}, query=lambda: ["9.0", "8.9"])
    msg = str(e.value)
    assert "AC4K_CUDA_ARCH" in msg and "9.0" in msg and "8.9" in msg


def test_detect_cuda_arch_gpu_unimplemented():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_cuda_arch({}, query=lambda: ["10.0"])
    assert "sm100" in str(e.value) and "cuda/sm90a" in str(e.value)


def test_detect_cuda_arch_no_gpu():
    with pytest.raises(BuildConfigError) as e:
        ab.detect_cuda_arch({}, query=lambda: [])
    assert "AC4K_CUDA_ARCH" in str(e.value)


# ============================================================================ nvidia-smi query

def test_query_caps_parses_output():
    calls = []
    caps = ab.query_gpu_compute_caps(run=fake_run("9.0\n 9.0 \n\n8.9\n", calls=calls))
    assert caps == ["9.0", "9.0", "8.9"]
    assert calls and calls[0][0] == "nvidia-smi" and "--query-gpu=compute_cap" in calls[0]


def test_query_caps_failure_returncode():
    assert ab.query_gpu_compute_caps(run=fake_run("9.0\n", returncode=9)) == []


@pytest.mark.parametrize("exc", [OSError("no nvidia-smi"), FileNotFoundError("nvidia-smi"),
                                 subprocess.TimeoutExpired("nvidia-smi", 30)])
def test_query_caps_exceptions(exc):
    def run(cmd, **kw):
        raise exc
    assert ab.query_gpu_compute_caps(run=run) == []


# ============================================================================ CUDA toolkit

def make_toolkit(path):
    os.makedirs(os.path.join(path, "bin"))
    os.makedirs(os.path.join(path, "include"))
    for f in ("bin/nvcc", "include/cuda_runtime.h"):
        with open(os.path.join(path, f), "w") as fh:
            fh.write("")
    return str(path)


def _must_not_run(*a, **k):
    raise AssertionError("nvcc must not be run")


def test_find_cuda_home_env_wins(tmp_path):
    tk = make_toolkit(tmp_path / "cuda-x")
    other = make_toolkit(tmp_path / "cuda-y")
    got = ab.find_cuda_home({"CUDA_HOME": tk}, which=lambda n: os.path.join(other, "bin", n), run=_must_not_run)
    assert got == tk
    got = ab.find_cuda_home({"CUDA_PATH": tk}, which=lambda n: None, run=_must_not_run)
    assert got == tk


def test_find_cuda_home_env_without_toolkit_is_skipped(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    tk = make_toolkit(tmp_path / "cuda-z")
    got = ab.find_cuda_home({"CUDA_HOME": str(empty)}, which=lambda n: os.path.join(tk, "bin", n),
                            run=_must_not_run)
    assert got == tk


def test_find_cuda_home_nvcc_in_toolkit(tmp_path):
    tk = make_toolkit(tmp_path / "cuda-a")
    got = ab.find_cuda_home({}, which=lambda n: os.path.join(tk, "bin", n) if n == "nvcc" else None,
                            run=_must_not_run)
    assert got == tk


@pytest.mark.parametrize("marker", ["_HERE_={tk}/bin", "_HERE_={tk}/bin/", "TOP={tk}/bin/.."])
def test_find_cuda_home_wrapper_nvcc(tmp_path, marker):
    tk = make_toolkit(tmp_path / "real-cuda")
    wrapbin = tmp_path / "wrapbin"
    wrapbin.mkdir()
    wrapper = wrapbin / "nvcc"
    wrapper.write_text(f"#!/bin/sh\nexec {tk}/bin/nvcc \"$@\"\n")
    calls = []
    out = "#$ _NVVM_BRANCH_=nvvm\n#$ " + marker.format(tk=tk) + "\n#$ _THE_END_=1\n"
    got = ab.find_cuda_home({}, which=lambda n: str(wrapper) if n == "nvcc" else None,
                            run=fake_run(stderr=out, calls=calls))
    assert os.path.normpath(got) == os.path.normpath(tk)
    assert calls and calls[0][0] == str(wrapper) and "--dryrun" in calls[0]


def test_find_cuda_home_wrapper_points_nowhere(tmp_path, monkeypatch):
    wrapbin = tmp_path / "wrapbin"
    wrapbin.mkdir()
    (wrapbin / "nvcc").write_text("#!/bin/sh\n")
    hide_usr_local(monkeypatch)
    got = ab.find_cuda_home({}, which=lambda n: str(wrapbin / "nvcc"),
                            run=fake_run(stderr=f"#$ _HERE_={tmp_path}/nothing/bin\n"))
    assert got is None


def hide_usr_local(monkeypatch):
    """Make the /usr/local/cuda fallback find nothing, whatever this machine has installed."""
    real = ab._has_toolkit
    monkeypatch.setattr(ab, "_has_toolkit", lambda root: False if root.startswith("/usr/local/cuda") else real(root))


def test_find_cuda_home_nothing_is_none(monkeypatch):
    hide_usr_local(monkeypatch)
    assert ab.find_cuda_home({}, which=lambda n: None, run=_must_not_run) is None


def test_find_cuda_home_nothing_falls_back_to_usr_local_cuda():
    # Without CUDA_HOME and nvcc the only candidate left is /usr/local/cuda (present on some machines).
    got = ab.find_cuda_home({}, which=lambda n: None, run=_must_not_run)
    if ab._has_toolkit("/usr/local/cuda"):
        assert got == "/usr/local/cuda"
    else:
        assert got is None


def test_find_cuda_home_nvcc_dryrun_oserror(tmp_path, monkeypatch):
    hide_usr_local(monkeypatch)

    def run(*a, **k):
        raise OSError("exec format error")
    assert ab.find_cuda_home({}, which=lambda n: str(tmp_path / "nvcc"), run=run) is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on PATH")
def test_find_cuda_home_real_machine():
    root = ab.find_cuda_home(env={k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")})
    assert root is not None
    assert os.path.isfile(os.path.join(root, "bin", "nvcc"))
    assert os.path.isfile(os.path.join(root, "include", "cuda_runtime.h"))


# ============================================================================ flags

@pytest.mark.parametrize("cores,jobs", [(1, 1), (2, 1), (3, 1), (16, 8), (17, 8), (0, 1)])
def test_default_max_jobs(cores, jobs):
    assert ab.default_max_jobs(cores) == jobs


def test_default_max_jobs_real():
    assert ab.default_max_jobs() == max(1, (os.cpu_count() or 2) // 2)


def test_nvcc_flags():
    f = ab.nvcc_flags("sm90a", 4)
    assert f.count("-gencode=arch=compute_90a,code=sm_90a") == 1
    assert sum(1 for x in f if x.startswith("-gencode")) == 1
    assert "-DAC4K_ARCH_SM90A=1" in f
    assert "-O3" in f
    assert "--threads=4" in f
    assert "-arch=sm_90a" not in f
    assert not any(x.startswith("-arch") for x in f)
    assert ab.nvcc_flags("sm90a", 1).count("--threads=1") == 1


def test_nvcc_flags_unimplemented_arch():
    with pytest.raises(KeyError):
        ab.nvcc_flags("sm120", 2)  # sm120 is built as ("sm89", sass="sm120"), never as a folder
    with pytest.raises(KeyError):
        ab.nvcc_flags("sm100", 2)


def test_nvcc_flags_sm89():
    f = ab.nvcc_flags("sm89", 1)
    gencode = [x for x in f if x.startswith("-gencode")]
    # sm_89 SASS plus the compute_89 PTX (JIT on newer GPUs, e.g. the H100 it is tested on)
    assert gencode == ["-gencode=arch=compute_89,code=sm_89", "-gencode=arch=compute_89,code=compute_89"]
    assert "-DAC4K_ARCH_SM89=1" in f and "-DAC4K_SASS_CC=89" in f
    assert "-DAC4K_SASS_CC=90" in ab.nvcc_flags("sm90a", 1)


def test_nvcc_flags_sm89_for_sm120():
    f = ab.nvcc_flags("sm89", 1, sass="sm120")
    gencode = [x for x in f if x.startswith("-gencode")]
    assert gencode == ["-gencode=arch=compute_89,code=sm_120", "-gencode=arch=compute_89,code=compute_89"]
    assert "-DAC4K_ARCH_SM89=1" in f and "-DAC4K_SASS_CC=120" in f
    assert "-DAC4K_SASS_CC=120" in ab.cxx_flags("sm89", "sm120")
    with pytest.raises(BuildConfigError):
        ab.gencode_flags("sm90a", "sm120")


def test_cxx_flags():
    f = ab.cxx_flags("sm90a")
    assert "-DAC4K_ARCH_SM90A=1" in f and "-O3" in f and "-DAC4K_SASS_CC=90" in f
    assert "-DAC4K_ARCH_SM89=1" in ab.cxx_flags("sm89")


def test_implemented_table_consistent():
    # every implemented CUDA arch has an nvcc target and a known name; archs built from another
    # folder point at an implemented one
    for arch in ab.IMPLEMENTED["cuda"]:
        assert arch in ab.GENCODE and arch in ab.KNOWN_CUDA_ARCHS and arch in ab.SASS_CC
    for arch, folder in ab.BUILT_AS.items():
        assert folder in ab.IMPLEMENTED["cuda"] and arch in ab.SASS_CC


# ============================================================================ setup.py stops early

def _setup_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AC4K_")}
    env.update(extra)
    return env


def _run_setup(env):
    return subprocess.run([sys.executable, "setup.py", "build_ext"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_setup_stops_for_unimplemented_arch():
    r = _run_setup(_setup_env(AC4K_BACKEND="cuda", AC4K_CUDA_ARCH="sm100"))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "sm100" in out and "cuda/sm90a" in out
    assert "build stopped" in out
    assert "sources:" not in out  # stopped before configuring any compile


def test_setup_stops_for_rocm():
    r = _run_setup(_setup_env(AC4K_BACKEND="rocm", AC4K_CUDA_ARCH="sm90a"))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "rocm" in out and "build stopped" in out
    assert "sources:" not in out
