import sys

from inducthead.cli import main

sys.exit(main())
