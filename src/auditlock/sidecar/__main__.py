"""`python -m auditlock.sidecar --config FILE`: the sidecar without the rest of the CLI.

Same as `auditlock sidecar --config FILE`, but imports nothing of the other subcommands
(smaller memory footprint in the container).
"""

import sys

from auditlock.cli.sidecar import run_from_argv

sys.exit(run_from_argv(sys.argv[1:]))
