"""Latency: measure models on devices (host, ssh://, adb, coreml) or predict them (profile:NAME).

`profile.profile()` is the entry point; `stage.profile_stage` runs it inside a recipe and turns
fps targets into gates; `costmodel` is the per-layer predictor, calibrated by `calibrate` and
checked against host measurements by `validate`.
"""
