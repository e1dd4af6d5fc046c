"""``python -m monai_bayes``: the ``monai-bayes`` command line."""

import sys

from monai_bayes.cli import main

sys.exit(main())
