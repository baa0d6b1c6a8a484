"""Launch the mpg_sam2 node (lifecycle; autostart walks it to active by itself).

    ros2 launch mpg_sam2_ros mpg_sam2.launch.py image:=/camera/image_raw device:=cuda

Arguments (``ros2 launch ... --show-args``): image, use_compressed, config (parameter file),
model_config, checkpoint, device, namespace, autostart, log_level.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mpg_sam2_ros"
EXECUTABLE = "mpg_sam2_node"
CONFIG = "config/mpg_sam2.yaml"

ARGUMENTS = [
    ("image", "image", "Input image topic (the node subscribes to <image> or <image>/compressed)."),
    ("use_compressed", "false", "Subscribe to <image>/compressed (JPEG/PNG) instead of raw images."),
    ("config", "", "Parameter file; empty: the package's config/mpg_sam2.yaml."),
    ("model_config", "", "Model config name (config/models/) or YAML; empty: the package's default model."),
    ("checkpoint", "", "Model weights; empty: the default model's."),
    ("device", "cpu", "cpu, cuda or cuda:N (falls back to cpu with a warning)."),
    ("dtype", "float32", "float32 or bfloat16."),
    ("namespace", "", "Namespace of the node and its topics."),
    ("autostart", "true", "Configure and activate the lifecycle node at start-up."),
    ("log_level", "info", "Logger level of the node."),
]


def _config_file():
    """The ``config`` argument, or the installed config/mpg_sam2.yaml when it is empty."""
    default = PathJoinSubstitution([FindPackageShare(PACKAGE), CONFIG])
    given = LaunchConfiguration("config")
    return PythonExpression(["'", given, "' or '", default, "'"])


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="mpg_sam2",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            _config_file(),
            {
                "use_compressed": ParameterValue(LaunchConfiguration("use_compressed"), value_type=bool),
                "model_config": ParameterValue(LaunchConfiguration("model_config"), value_type=str),
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "dtype": ParameterValue(LaunchConfiguration("dtype"), value_type=str),
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription([*args, node])
