"""s2trt.export"""
