"""Every node gives numpy's BLAS one thread, unless the user chose a number."""

import os
import subprocess
import sys

PROBE = ('import numpy, threadpoolctl; from sage_common.threads import limit_blas_threads; '
         'limit_blas_threads(); '
         'print(max(p["num_threads"] for p in threadpoolctl.threadpool_info() '
         'if p["user_api"] == "blas"))')


def blas_threads(**env) -> int:
    clean = {k: v for k, v in os.environ.items()
             if k not in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS')}
    out = subprocess.run([sys.executable, '-c', PROBE], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[-1])


def test_one_blas_thread_unless_the_user_chose():
    assert blas_threads() == 1
    if os.cpu_count() > 1:              # the user's choice stands
        assert blas_threads(OPENBLAS_NUM_THREADS='2') == 2
