"""``python -m ccu_vision``: the ``ccu-vision`` command line."""

from .cli import main

if __name__ == "__main__":
    main()
