"""`python -m moonxp info`: placeholder"""
def report(): return "info\n"
