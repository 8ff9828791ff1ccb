"""Training and export (needs the ``train`` extra: torch, torchvision, timm, onnx)."""
