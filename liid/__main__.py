"""``python -m liid``: the ``liid`` command (for launchers that take a module, e.g. ``torchrun -m liid``)."""

from liid.cli import main

if __name__ == "__main__":
    main()
