"""`python -m agentrl.cli ...` is `agentrl ...` (torchrun and subprocess tests launch it this way)."""

import sys

from agentrl.cli import main

sys.exit(main())
