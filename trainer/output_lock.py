# Copyright 2026 The bert-pals-multitask authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""
One run at a time in an output directory.

Two runs started at once into one new folder would both find it empty, and one run's results would be lost. The run
holds an exclusive `flock` on a file in the folder for as long as its process lives: a second run fails at once,
naming the holder. The kernel drops the lock with the process, so a killed run leaves no stale lock behind. The file
stays in place (deleting it would let two runs lock two different files); its name starts with `_`, which the
Trainer's `push_to_hub` leaves out.
"""

import fcntl
import os
import socket
from typing import IO


LOCK_NAME = "_run_multitask.lock"


def lock_output_dir(output_dir: str) -> IO:
    """
    Locks `output_dir` (created if needed) for this process; keep the returned file open while the run uses the
    folder. A `BlockingIOError` naming the folder and the holder if another process has it.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"--output_dir {output_dir}: a file, not a folder.")
    os.makedirs(output_dir, exist_ok=True)
    handle = open(os.path.join(output_dir, LOCK_NAME), "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BlockingIOError(
            f"--output_dir {output_dir} is in use by another run ({holder}): wait for it to end, or choose another "
            "--output_dir."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle
