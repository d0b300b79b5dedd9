"""Entry points, `python -m launch.NAME`.

Importing the package (which `python -m launch.NAME` does first, before the
launcher's own imports) restarts the process once, with glibc's malloc
backing large allocations with transparent huge pages
(GLIBC_TUNABLES=glibc.malloc.hugetlb=1): XLA's CPU temporaries are allocated
afresh every step, and on 4 KiB pages the base model's step at seq 128 took
about 160,000 page faults and 10 % more CPU time (benchmarks/results/README.md).
A GLIBC_TUNABLES already set, even empty, is the user's choice and is kept;
so is a process that is not `python -m launch.NAME`.
"""

import os
import platform
import sys

_TUNABLES = 'glibc.malloc.hugetlb=1'


def _restart_with_huge_page_malloc() -> None:
  if 'GLIBC_TUNABLES' in os.environ or platform.libc_ver()[0] != 'glibc':
    return
  argv = sys.orig_argv  # As the interpreter got it: python [options] -m launch.NAME ...
  module = argv.index('-m') + 1 if '-m' in argv else len(argv)
  if module >= len(argv) or not argv[module].startswith('launch.'):
    return
  os.execve(
    sys.executable, [sys.executable, *argv[1:]], {**os.environ, 'GLIBC_TUNABLES': _TUNABLES}
  )


_restart_with_huge_page_malloc()
