import sys

from primitives.cli import main

sys.exit(main())
