"""``python -m lightning_mlsr.data check PATH``: see :mod:`lightning_mlsr.data.collection.check`."""

from lightning_mlsr.data.collection.check import main

raise SystemExit(main())
