"""Wall and CPU time of a block. CPU time (every thread of the process) barely moves when
another process shares the cores, so beside the wall time it tells a busier machine from
more work."""

from __future__ import annotations

import time


class Clock:
    wall: float
    cpu: float

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
