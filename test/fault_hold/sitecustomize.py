"""Test hook: holds a process at a chosen rename, so that a test can kill a run at a known point.

Put this directory on PYTHONPATH and set COMFLP_FAULT_HOLD to a regular expression: the first
``os.replace``/``os.rename`` whose destination matches it writes the file COMFLP_FAULT_FLAG
and then waits (before renaming) until the file COMFLP_FAULT_RELEASE exists.  Without
COMFLP_FAULT_HOLD nothing changes.
"""
import os
import re
import time

_pattern = os.environ.get("COMFLP_FAULT_HOLD")
if _pattern:
    _regex = re.compile(_pattern)
    _flag = os.environ["COMFLP_FAULT_FLAG"]
    _release = os.environ.get("COMFLP_FAULT_RELEASE", "")

    def _held(function):
        def wrapper(src, dst, *args, **kwargs):
            if _regex.search(os.fspath(dst)):
                with open(_flag, "a") as f:
                    f.write(f"{os.getpid()} {os.fspath(dst)}\n")
                while not (_release and os.path.exists(_release)):
                    time.sleep(0.05)
            return function(src, dst, *args, **kwargs)

        return wrapper

    os.replace = _held(os.replace)
    os.rename = _held(os.rename)
