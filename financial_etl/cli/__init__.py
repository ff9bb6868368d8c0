"""`financial-etl`: the console command (cli/main.py) and its closing summary."""
