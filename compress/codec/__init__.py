"""The keypoint bitstream of video-call bundles (docs/bitstream.md) and `compress call`.

format.py   the format a manifest declares          entropy.py  rANS with integer tables
packets.py  one packet per frame, closed loop        stream.py   the call stream file
classical.py  H.264 / H.265 / AV1 through PyAV       flow.py     a bundle's sender and receiver
fit.py      steps and tables fitted to a bundle       call.py     `compress call`
preview.py  received video and side-by-side preview  bench.py    rate-quality benchmark
"""
