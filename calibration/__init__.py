"""Calibration data from real video frames and quantization of exported graphs."""
