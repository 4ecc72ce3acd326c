"""obsmcp-test-broken 2.0.0: a release that fails the MCP handshake (answers garbage, then exits 3)."""

import sys

NAME = "obsmcp-test-broken"
__version__ = "2.0.0"


def main():
    if "--version" in sys.argv[1:]:
        print(f"{NAME} {__version__}")
        return
    sys.stdin.readline()
    sys.stdout.write("this is not JSON-RPC\n")
    sys.stdout.flush()
    sys.stderr.write("obsmcp-test-broken 2.0.0: startup failed (a deliberately broken release)\n")
    sys.exit(3)
