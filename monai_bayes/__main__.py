import sys

from monai_bayes.cli import main

sys.exit(main())
