import os
import sys

from ray_pipeline.cli import main

code = main()
# Everything is written and closed by now (Chroma clients, the errors file, Ray): skip the interpreter's
# teardown of torch and its threads, which takes over a second.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
