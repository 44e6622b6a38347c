import sys

from ray_pipeline.cli import main

sys.exit(main())
