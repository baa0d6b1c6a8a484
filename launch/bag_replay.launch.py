"""Play a ROS 2 bag into the mpg_sam2 node (``ros2 bag play``), e.g. to evaluate on a recording.

    ros2 launch mpg_sam2_ros bag_replay.launch.py bag:=/data/kitchen_bag image:=/camera/color/image_raw \\
        text:="the red mug"

Arguments: bag, image, use_compressed, text (published latched on text_command), rate, loop
(a loop makes timestamps go backwards: the node restarts its stream and sets stream_reset),
plus the arguments of mpg_sam2.launch.py (config, model_config, checkpoint, device, namespace).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.conditions import IfCondition, UnlessCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.substitutions import FindPackageShare

PACKAGE = "mpg_sam2_ros"
INCLUDED = "launch/mpg_sam2.launch.py"

ARGUMENTS = [
    ("bag", "", "Path of the bag to play (a folder with metadata.yaml, sqlite3 or mcap)."),
    ("image", "/camera/image_raw", "Image topic recorded in the bag."),
    ("use_compressed", "false", "The bag holds <image>/compressed (JPEG/PNG)."),
    ("text", "", "Referring expression to publish on text_command (latched); empty: publish none."),
    ("rate", "1.0", "Playback rate."),
    ("loop", "false", "Loop the bag (the node restarts its stream at each loop)."),
    ("config", "", "Node parameter file; empty: the package's config/mpg_sam2.yaml."),
    ("model_config", "", "Model config; empty: the package's default model."),
    ("checkpoint", "", "Model weights; empty: the default model's."),
    ("device", "cpu", "cpu, cuda or cuda:N."),
    ("namespace", "", "Namespace of the node."),
]


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), INCLUDED])),
        launch_arguments={k: LaunchConfiguration(k) for k in (
            "image", "use_compressed", "config", "model_config", "checkpoint", "device", "namespace")}.items(),
    )
    loop = LaunchConfiguration("loop")
    play_cmd = ["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
                "--topics", LaunchConfiguration("image")]
    play = ExecuteProcess(cmd=play_cmd, condition=UnlessCondition(loop), output="screen")
    play_loop = ExecuteProcess(cmd=[*play_cmd, "--loop"], condition=IfCondition(loop), output="screen")
    command = ExecuteProcess(
        cmd=["ros2", "topic", "pub", "--once", "--keep-alive", "3600", "--qos-durability", "transient_local", "--qos-reliability", "reliable",
             [LaunchConfiguration("namespace"), "/text_command"], "std_msgs/msg/String",
             ["{data: '", LaunchConfiguration("text"), "'}"]],
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("text"), "' != ''"])),
        output="screen",
    )
    return LaunchDescription([*args, node, command, play, play_loop])
