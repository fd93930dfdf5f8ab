"""Threads of the numeric libraries in a SAGE process (ROS-free)."""

import os


def limit_blas_threads() -> None:
    """Give numpy's BLAS one thread in this process, unless the user chose a number.

    A node's matrix-vector products are small; OpenBLAS's extra threads spin while they
    wait, and on 2 cores the memory node took 94% of a core with them, 10% without.
    """
    if not {'OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS'} & set(os.environ):
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api='blas')
