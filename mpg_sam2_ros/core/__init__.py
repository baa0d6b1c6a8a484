"""ROS-free core: model, stream state, I/O helpers. Never imports rclpy or message types."""
