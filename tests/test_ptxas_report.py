"""The compiler's resource report for every sm90a and sm89 kernel file: no local-memory spills and no
wgmma serialization / ignored setmaxnreg warnings (C7508, C7510, C7512, C7513, C7515, C7519). Needs nvcc only."""
import glob
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "lib", "cuda", "sm90a", "*.cu")))
SOURCES_SM89 = sorted(glob.glob(os.path.join(ROOT, "lib", "cuda", "sm89", "*.cu")))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("src", SOURCES, ids=os.path.basename)
def test_sm90a_kernels_compile_clean(src, tmp_path):
    _check_report(src, tmp_path, ["-gencode=arch=compute_90a,code=sm_90a", "-DAC4K_ARCH_SM90A=1"])


# sm89 is also what consumer Blackwell (sm_120) runs, from the same compute_89 code.
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
@pytest.mark.parametrize("src", SOURCES_SM89, ids=os.path.basename)
def test_sm89_kernels_compile_clean(src, tmp_path):
    _check_report(src, tmp_path, ["-arch=sm_89", "-DAC4K_ARCH_SM89=1"])


def _check_report(src, tmp_path, target):
    cmd = ["nvcc", "-O3", "-std=c++17", *target,
           "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "lib", "cuda"), "-Xptxas", "-v",
           "-c", src, "-o", str(tmp_path / "k.o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    report = res.stdout + res.stderr
    assert res.returncode == 0, report[-3000:]
    spills = [ln for ln in report.splitlines() if re.search(r"[1-9]\d* bytes spill (stores|loads)", ln)]
    assert not spills, "\n".join(spills)
    warnings = re.findall(r"\(C75(?:08|10|12|13|15|19)\)[^\n]*", report)
    assert not warnings, "\n".join(warnings)
    assert "Compiling entry function" in report  # the report was really read
