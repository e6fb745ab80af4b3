/* MKL follows MKL_CBWR (the Makefile sets MKL_CBWR=AVX2: one code path, one order of additions)
 * only on CPUs it takes for Intel's. On other x86-64 CPUs (AMD's) it ignores MKL_CBWR and runs
 * paths of its own, which add in other orders: a two-tower trained there differs from the first
 * epochs on. Preloaded (LD_PRELOAD, as the Makefile does), this answers MKL's vendor check with
 * "Intel", so MKL_CBWR=AVX2 holds on every CPU: its AVX2 paths run on any x86-64 CPU with AVX2.
 * recutils.cache.kernel_paths() keys cached results by whether MKL follows MKL_CBWR. */
int mkl_serv_intel_cpu_true(void) { return 1; }
