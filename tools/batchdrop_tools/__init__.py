"""batchdrop's tools beside the Lambda layer: the `batchdrop` command line, the ZeroGPU emulator and the local stack.

Nothing here runs on Lambda; the layer (`batchdrop`) never imports this package.
"""

from batchdrop import __version__

__all__ = ["__version__"]
