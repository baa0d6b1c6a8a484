"""Training: datasets, losses, train loop (ROS-free: never imports rclpy or message types)."""
