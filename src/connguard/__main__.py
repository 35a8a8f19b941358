import sys

from connguard.cli import main

sys.exit(main())
