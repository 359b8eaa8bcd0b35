"""`python -m agi.cli` is `crmagi` (the tests start the server this way)."""
from agi.cli import main

main()
