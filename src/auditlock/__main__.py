import sys

from auditlock.cli.main import main

sys.exit(main())
