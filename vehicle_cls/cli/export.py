"""placeholder"""
def register(subparsers):
    return None
