"""Model bundles for app developers: write (the bundle stage), verify, publish and pull.

exported/<name>-<version>/
  manifest.json          schema_version 1.2, documented in docs/bundle.md
  MODEL_CARD.md
  models/<part>.onnx, models/<part>.mlpackage.zip
  assets/<name>.bin      constants the app needs besides the models (raw little-endian)
  snippets/video_call.py, VideoCall.kt, VideoCall.swift      (flow video_call)
  snippets/on_device.py, OnDevice.kt, OnDevice.swift         (flow on_device)
"""

from compress.bundle.manifest import SCHEMA_VERSION, Manifest, load_manifest
from compress.bundle.registry import publish, pull
from compress.bundle.verify import verify_bundle

__all__ = ["SCHEMA_VERSION", "Manifest", "load_manifest", "verify_bundle", "publish", "pull"]
