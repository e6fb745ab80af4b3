"""MKL follows MKL_CBWR only on CPUs it takes for Intel's; the preloaded shim
(recutils/native/mkl_cnr.c, as the Makefile builds it) makes it do so on any CPU, and the cache
keys say which paths computed an entry (recutils.cache.kernel_paths)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import hashlib, torch
from recutils.cache import kernel_paths, mkl_follows_cbwr
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
a, b = torch.randn(512, 1682, generator=g), torch.randn(1682, 128, generator=g)
print(mkl_follows_cbwr(), kernel_paths(), hashlib.sha1((a @ b).numpy().tobytes()).hexdigest(), sep="|")
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    assert compiler, "no C compiler: the Makefile builds the MKL shim with one (apt-get install gcc)"
    library = tmp_path_factory.mktemp("shim") / "libmkl-cnr.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(ROOT / "recutils/native/mkl_cnr.c")],
                   check=True)
    return library


def probe(cbwr: str, preload: Path | None) -> tuple[bool, str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")}
    env |= {"MKL_CBWR": cbwr, "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    follows, paths, digest = out.strip().split("|")
    return follows == "True", paths, digest


def cpu_flags() -> tuple[str, set[str]]:
    info = Path("/proc/cpuinfo").read_text()
    vendor = next(line.split(":")[1].strip() for line in info.splitlines() if line.startswith("vendor_id"))
    flags = next(line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags"))
    return vendor, set(flags)


def test_with_the_shim_mkl_follows_cbwr_and_the_cache_key_says_so(shim):
    vendor, flags = cpu_flags()
    follows, paths, _ = probe("AVX2", None)
    assert follows == (vendor == "GenuineIntel")
    assert paths == ("AVX2" if follows else "AVX2, MKL on its own vendor paths")
    assert probe("AVX2", shim)[:2] == (True, "AVX2")
    if "avx512f" in flags:  # MKL has an AVX-512 branch to take here: the two settings must differ
        assert probe("AVX2", shim)[2] != probe("AVX512", shim)[2], "MKL ignored MKL_CBWR with the shim"
