"""ROS 2 adapters over ``mpg_sam2_ros.core``: message conversion, the command table, the
node's scheduling and health bookkeeping, and the lifecycle node itself.

Only ``node.py`` imports rclpy; the other modules use message classes (plain Python objects)
or nothing from ROS at all, so they are tested without DDS.
"""
