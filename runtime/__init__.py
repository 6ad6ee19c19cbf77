"""s2trt.runtime"""
