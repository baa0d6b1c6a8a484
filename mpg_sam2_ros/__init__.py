"""mpg_sam2_ros: text-referred video object segmentation (MPG-SAM 2) for ROS 2.

The generated message modules (``mpg_sam2_ros.msg``) are installed by CMake into the
environment's site-packages, next to (not inside) this source tree; extending ``__path__``
lets both halves of the package import as one.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
