"""`python -m ditlens.metrics.classifier --train|--eval [--world v2 --out FOLDER]`."""

from .cli import main

main()
