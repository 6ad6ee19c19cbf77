"""s2trt.calib"""
