"""``python -m lightning_mlsr.data check PATH``: see :mod:`lightning_mlsr.data.check`."""

from lightning_mlsr.data.check import main

raise SystemExit(main())
