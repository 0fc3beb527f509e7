"""`python -m sentidistill` == the `sentidistill` command."""

from sentidistill.cli import main

main()
