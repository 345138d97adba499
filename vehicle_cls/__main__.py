"""``python -m vehicle_cls`` is the ``vehicle-cls`` command."""

import sys

from vehicle_cls.cli import main

sys.exit(main())
