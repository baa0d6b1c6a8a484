"""Rosbag replay evaluation: segment a recorded ROS 2 bag (in process or through the live node),
write a result bag, masks, an overlay video, and score against ground truth."""
