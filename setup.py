"""pip install path (ROS 2 from PyPI wheels). On a full ROS 2 install, colcon builds the
package through CMakeLists.txt (ament_cmake) instead."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mpg_sam2_ros"


def data_files():
    out = [(f"share/{PACKAGE}", ["package.xml"])]
    for folder in ("config", "launch", "msg", "srv", "assets"):
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                out.append((f"share/{PACKAGE}/{path.parent}", [str(path)]))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 referring video object segmentation with MPG-SAM 2 (BEiT-3 + SAM 2)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=data_files(),
    install_requires=[line.strip() for line in (Path(__file__).parent / "requirements.txt").read_text().splitlines()
                      if line.strip() and not line.startswith("#")],
    entry_points={"console_scripts": [
        "mpg-sam2 = mpg_sam2_ros.cli:main",
        "mpg_sam2_node = mpg_sam2_ros.ros.node:main",
    ]},
)
