"""Write (default) or check (--check) the README's interface tables, generated from
mpg_sam2_ros/ros/interface.py (topics, services), ros/params.py (parameters) and msg/, srv/."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mpg_sam2_ros.ros.interface import markdown  # noqa: E402

BEGIN = "<!-- ros-interface:begin"
END = "<!-- ros-interface:end -->"


def render(readme: str) -> str:
    a = readme.index(BEGIN)
    a = readme.index("-->", a) + 3
    b = readme.index(END)
    return readme[:a] + "\n" + markdown(REPO) + "\n" + readme[b:]


def main() -> int:
    path = REPO / "README.md"
    text = path.read_text()
    new = render(text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md interface tables are out of date: run python scripts/ros_tables.py", file=sys.stderr)
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
