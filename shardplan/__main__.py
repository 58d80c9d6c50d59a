"""`python -m shardplan`: the command line."""
from shardplan.planner.cli import app

app(prog_name="shardplan")
