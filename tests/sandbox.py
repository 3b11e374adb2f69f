"""Run a command inside the sandbox the shipped systemd unit builds, without systemd.

    unshare --mount --pid --fork python tests/sandbox.py STATE_DIR -- COMMAND...

Inside fresh mount and pid namespaces (root only), this rebuilds what the unit's hardening
does to a process's view of the system, as far as it can be done by hand:

- `ProcSubset=pid`, `ProtectProc=invisible`: /proc mounted with `subset=pid,hidepid=invisible`
  (no /proc/stat, /proc/meminfo, /proc/cpuinfo; other users' processes invisible);
- `PrivateTmp=yes`: an empty tmpfs on /tmp (a checkout or virtual environment that lives under
  /tmp, which the installed service never runs from, stays visible there, read-only, so that
  the tests run from any clone);
- `ProtectSystem=strict` with `StateDirectory=`: every mount read-only but /proc, /sys, /dev and
  /tmp, and the state directory, bind-mounted writable at /tmp/state;
- `MemoryDenyWriteExecute=yes`: `PR_SET_MDWE` (the kernel's own switch, which systemd uses
  where the kernel has it);
- `NoNewPrivileges=yes`.

COMMAND then runs (exec, with /tmp/state as its working directory) as the namespace's first
process. Not rebuilt here: what the unit's `SystemCallFilter=` refuses, and `DynamicUser=`
(the command stays root: the interpreter of a test run may live where no other user can
read it).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_MDWE = 65
_PR_MDWE_REFUSE_EXEC_GAIN = 1
_WRITABLE = ("/proc", "/sys", "/dev", "/tmp")


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as file:
        points = [line.split()[4].replace("\\040", " ") for line in file]
    return list(dict.fromkeys(points))


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _kept_under_tmp() -> dict[str, int]:
    """This checkout and the running virtual environment, when they live under /tmp, opened
    (by path descriptors) before the empty /tmp hides them."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    kept = {}
    for path in dict.fromkeys((checkout, os.path.realpath(sys.prefix))):
        if path.startswith("/tmp/") and not any(path.startswith(p + "/") for p in kept):
            kept[path] = os.open(path, os.O_PATH | os.O_DIRECTORY)
    return kept


def _bind(fd: int, target: str, *, read_only: bool) -> None:
    os.makedirs(target, exist_ok=True)
    # --no-canonicalize: mount(8) would otherwise resolve the descriptor's link to its path
    # name, which under the new /tmp names the empty directory just made.
    _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{fd}", target)
    os.close(fd)
    if read_only:
        _mount("-o", "remount,bind,ro", target)


def main() -> None:
    state, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    state_fd = os.open(state, os.O_PATH | os.O_DIRECTORY)
    kept = _kept_under_tmp()
    _mount("--make-rprivate", "/")
    _mount("-t", "proc", "-o", "subset=pid,hidepid=invisible", "proc", "/proc")
    _mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", "/tmp")
    _bind(state_fd, "/tmp/state", read_only=False)
    for path, fd in kept.items():
        _bind(fd, path, read_only=True)
    for point in _mount_points():
        if point == "/tmp/state" or any(
            point == top or point.startswith(top + "/") for top in _WRITABLE
        ):
            continue
        subprocess.run(["mount", "-o", "remount,bind,ro", point], check=False,
                       stderr=subprocess.DEVNULL)
    _prctl(_PR_SET_MDWE, _PR_MDWE_REFUSE_EXEC_GAIN)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    os.chdir("/tmp/state")
    os.environ["HOME"] = "/tmp/state"
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
