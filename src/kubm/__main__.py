from kubm.cli import app

app(prog_name="kubm")
