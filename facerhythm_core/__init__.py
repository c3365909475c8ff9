"""facerhythm_core: the science behind the facerhythm workflow.

Submodules are imported on demand (``from facerhythm_core import tracking``) so that
importing the package stays cheap and never pulls in torch or OpenCV by itself.
"""

__version__ = "0.1.0"
