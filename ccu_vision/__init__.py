"""ccu-vision: find registered brand logos and reused official product photos in listing images."""

__version__ = "0.1.0"
