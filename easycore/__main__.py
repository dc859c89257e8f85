import sys

from easycore.cli import main

sys.exit(main())
