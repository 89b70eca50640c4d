"""`python -m agentrl.cli ...` is `agentrl ...` (torchrun and subprocess tests launch it this way)."""

import sys

from agentrl.cli import console_main

sys.exit(console_main())
