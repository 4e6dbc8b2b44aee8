"""``jit``: numba's ``njit`` for the kernel's functions, cached (numba's ``cache=True`` places: see
docs/online.md, "numba's cache") under a key that covers every source file the kernel is built from.

numba keys a cached function on its own bytecode and its own file's time stamp only: a function of one
module that calls (or inlines) a function of another, or reads another module's constants, would load
its stale machine code after that other module changed. The kernel spans several modules (and layout.py's
constants), so each function's key also holds the digest of all of them: a change of any one recompiles
every kernel function on next use, as a change of the single kernel.py used to.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from numba import njit
from numba.core.caching import FunctionCache

_HERE = Path(__file__).parent
SOURCES = (*sorted(_HERE.glob("*.py")), _HERE.parent / "layout.py")
DIGEST = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in SOURCES)).hexdigest()


class KernelCache(FunctionCache):
    """numba's function cache, its index key extended by the kernel sources' digest."""

    def _index_key(self, sig, codegen):
        return (*super()._index_key(sig, codegen), DIGEST)


def jit(fn=None, *, inline: str = "never"):
    """``njit`` with ``KernelCache``. ``inline="always"`` for the small steps and helpers the hot loops
    call: numba then compiles them into their caller, as if written there."""

    def wrap(f):
        dispatcher = njit(inline=inline)(f)
        # numba's own ``cache=True`` sets this attribute to a FunctionCache (Dispatcher.enable_caching)
        dispatcher._cache = KernelCache(dispatcher.py_func)
        return dispatcher

    return wrap if fn is None else wrap(fn)
