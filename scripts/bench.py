#!/usr/bin/env python3
"""Run the ccu-vision benchmark (same as ``ccu-vision bench``); see ``scripts/bench.py --help``."""

import sys

from ccu_vision.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
