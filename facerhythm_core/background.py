"""Running a generator ahead of its consumer in a background thread.

Used to overlap video decoding (:func:`facerhythm_core.video.iter_frame_chunks`) and
frame preprocessing (:mod:`facerhythm_core.tracking`) with the consumer's work.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator


def run_ahead(gen: Iterator, maxsize: int = 1, name: str = "run-ahead") -> Iterator:
    """Run a generator in a background thread, ``maxsize`` items ahead.

    Errors raised in the thread are re-raised in the consumer; closing the returned
    iterator early stops the thread and closes ``gen``.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
    stop = threading.Event()
    end = object()

    def work():
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # hand errors to the consumer
            q.put(exc)
        finally:
            close = getattr(gen, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except Exception:  # pragma: no cover
                    pass

    t = threading.Thread(target=work, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        t.join()
