"""`python -m financial_etl.cli`: the same as the `financial-etl` command."""

import sys

from financial_etl.cli.main import main

sys.exit(main())
