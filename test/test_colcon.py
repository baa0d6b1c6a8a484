"""`colcon build` for real: the package is built with colcon (ament_cmake, the full CMake path:
messages + the Python package + config/assets/launch + the `ros2 run` executable) into a temporary
workspace, with this venv (ROS 2 kilted from PyPI wheels) as the underlay. Then, from that install
space only: the generated messages import, and the installed node executable comes up (its
lifecycle service reports `active`) and stops cleanly on SIGINT.

Needs colcon (`colcon-common-extensions`, in requirements.lock), cmake and a C++ compiler, and the
venv's CMake exports with their include dirs rewritten (`scripts/build_msgs.sh`, run by
`scripts/setup.sh`). Its own ROS_DOMAIN_ID; every wait is bounded. About 30-60 s.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("colcon_core", reason="colcon is not installed (pip install colcon-common-extensions)")

DOMAIN_ID = 201 + os.getpid() % 30  # 201..230, disjoint from test_msgs.py (1..100) and test_node.py (101..200)
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.msg import State  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
PACKAGE = "mpg_sam2_ros"
# not part of the package's sources: environments, build outputs, data, VCS
EXCLUDE = {".venv", "build", "install", "log", "data", "runs", "out", ".git", ".pytest_cache", "__pycache__"}
BUILD_S = 300.0  # colcon build on a loaded CI machine (~25 s idle)
START_S = 90.0   # node start-up (model build) on a loaded machine
STOP_S = 20.0


def _base_env() -> dict[str, str]:
    """The venv as the only underlay: what `source <underlay>/setup.bash` would give."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH",
                        "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}
    env.update(
        AMENT_PREFIX_PATH=str(VENV),
        CMAKE_PREFIX_PATH=str(VENV),
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(VENV / "lib"), os.environ.get("LD_LIBRARY_PATH", "")) if p),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        PYTHONUNBUFFERED="1",
        ROS_DOMAIN_ID=str(DOMAIN_ID),
    )
    return env


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"(no log: {exc})"


@pytest.fixture(scope="module")
def install_space(tmp_path_factory) -> Path:
    """`colcon build` of a copy of this package in a fresh workspace; returns <ws>/install."""
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: colcon build needs cmake and a C++ compiler", pytrace=False)
    stale = [f for f in glob.glob(str(VENV / "share" / "*" / "cmake" / "*.cmake"))
             if "/opt/python/cp311-cp311/include" in Path(f).read_text(errors="replace")]
    if stale:
        pytest.fail(f"{len(stale)} CMake export(s) in {VENV} still name the wheel build machine's include "
                    f"dirs (e.g. {stale[0]}): run scripts/build_msgs.sh first", pytrace=False)
    colcon = VENV / "bin" / "colcon"
    assert colcon.is_file(), f"no colcon executable in {VENV / 'bin'}"

    ws = tmp_path_factory.mktemp("colcon_ws")
    shutil.copytree(REPO, ws / "src" / PACKAGE, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in EXCLUDE or n.endswith(".egg-info")])
    log = ws / "colcon_build.log"
    cmd = [str(colcon), "build", "--event-handlers", "console_direct+",
           "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DPython3_FIND_VIRTUALENV=ONLY",
           "-DBUILD_TESTING=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(cmd, cwd=ws, env=_base_env(), stdout=fh, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=BUILD_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"colcon build took over {BUILD_S:.0f} s:\n{_tail(log)}", pytrace=False)
    assert proc.returncode == 0, f"colcon build failed ({proc.returncode}):\n{_tail(log)}"
    text = log.read_text(errors="replace")
    assert "Summary: 1 package finished" in text, text[-4000:]
    install = ws / "install"
    assert (install / "local_setup.bash").is_file(), sorted(os.listdir(install))
    return install


def _in_install(install: Path, script: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run `python -c script` in a shell that sourced the install space's local_setup.bash
    (on top of the venv underlay), from a directory outside the repository."""
    cmd = f'source "{install}/local_setup.bash" && exec python -c "$MPG_SAM2_SCRIPT"'
    env = dict(_base_env(), MPG_SAM2_SCRIPT=textwrap.dedent(script))
    return subprocess.run(["bash", "-c", cmd], cwd=install.parent, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_installed_messages_import_from_install_space(install_space):
    pkg = install_space / PACKAGE
    assert (pkg / "lib" / PACKAGE / "mpg_sam2_node").is_file()
    assert os.access(pkg / "lib" / PACKAGE / "mpg_sam2_node", os.X_OK)
    assert (pkg / "share" / PACKAGE / "package.xml").is_file()
    assert (pkg / "share" / PACKAGE / "config" / "models" / "cpu_small.yaml").is_file()
    assert (pkg / "share" / PACKAGE / "launch").is_dir()
    res = _in_install(install_space, """
        import os, sys
        import mpg_sam2_ros.msg, mpg_sam2_ros.srv, mpg_sam2_ros.ros.node
        from mpg_sam2_ros.msg import Segmentation, ObjectSegmentation
        from mpg_sam2_ros.srv import SetCommands
        from rclpy.serialization import deserialize_message, serialize_message
        msg = Segmentation(frame_index=7, objects=[ObjectSegmentation(object_id=3, text="the red mug")])
        back = deserialize_message(serialize_message(msg), Segmentation)  # loads the C typesupport
        assert back.frame_index == 7 and back.objects[0].text == "the red mug", back
        req = SetCommands.Request()
        print("AMENT", os.environ["AMENT_PREFIX_PATH"])
        for m in (mpg_sam2_ros.msg, sys.modules[Segmentation.__module__], sys.modules[SetCommands.__module__],
                  mpg_sam2_ros.ros.node):
            print("FILE", m.__file__)
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    ament = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("AMENT ")]
    assert ament and ament[0].split(os.pathsep)[0] == str(pkg), lines
    files = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("FILE ")]
    assert len(files) == 4, res.stdout + res.stderr
    for f in files:
        assert Path(f).resolve().is_relative_to(install_space.resolve()), f"{f} not from the install space"


def test_installed_node_executable_comes_up_and_stops(install_space):
    exe = install_space / PACKAGE / "lib" / PACKAGE / "mpg_sam2_node"
    log_path = install_space.parent / "node.log"
    env = _base_env()
    # `ros2 run mpg_sam2_ros mpg_sam2_node`, with the install space sourced; exec keeps the pid.
    cmd = f'source "{install_space}/local_setup.bash" && exec "{exe}" --ros-args -p autostart:=true'
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN_ID)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=install_space.parent, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        node = rclpy.create_node("mpg_sam2_colcon_test", context=ctx)
        client = node.create_client(GetState, "/mpg_sam2/get_state")
        from rclpy.executors import SingleThreadedExecutor
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + START_S
        state = None
        while time.monotonic() < deadline and proc.poll() is None:
            if not client.service_is_ready():
                executor.spin_once(timeout_sec=0.2)
                continue
            future = client.call_async(GetState.Request())
            call_deadline = min(deadline, time.monotonic() + 10.0)
            while not future.done() and time.monotonic() < call_deadline:
                executor.spin_once(timeout_sec=0.1)
            if future.done() and future.result() is not None:
                state = future.result().current_state
                if state.id == State.PRIMARY_STATE_ACTIVE:
                    break
            time.sleep(0.5)
        assert proc.poll() is None, f"node exited early ({proc.returncode}):\n{_tail(log_path)}"
        assert state is not None, f"/mpg_sam2/get_state never answered within {START_S:.0f} s:\n{_tail(log_path)}"
        assert state.id == State.PRIMARY_STATE_ACTIVE, f"node state {state.label!r}, not active:\n{_tail(log_path)}"
        # the running node imports the message modules (Python typesupport extensions) of the
        # install space; the C libraries they link may resolve to the identical ones the pip
        # path built into the venv (its lib/ is on LD_LIBRARY_PATH first, by the wheels' bootstrap)
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():
            mapped = {ln.split()[-1] for ln in maps.read_text().splitlines() if ln.split()[-1:] and "mpg_sam2_ros" in ln}
            extensions = {p for p in mapped if "site-packages/mpg_sam2_ros" in p}
            assert extensions and all(Path(p).is_relative_to(install_space) for p in extensions), mapped
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"node did not exit within {STOP_S:.0f} s of SIGINT:\n{_tail(log_path)}", pytrace=False)
        rclpy.shutdown(context=ctx)
    text = _tail(log_path, 100000)
    assert proc.returncode == 0, f"node exited with {proc.returncode}:\n{text[-4000:]}"
    assert "Traceback" not in text, text[-4000:]
