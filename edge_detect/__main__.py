import sys

from edge_detect.cli import main

sys.exit(main())
