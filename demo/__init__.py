"""s2trt.demo"""
