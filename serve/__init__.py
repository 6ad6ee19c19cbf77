"""s2trt.serve"""
