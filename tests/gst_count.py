#!/usr/bin/python3
"""Count buffers reaching GStreamer fakesinks, exactly (via the handoff signal).

usage: /usr/bin/python3 gst_count.py SECONDS 'PIPELINE DESCRIPTION'

Every fakesink in the pipeline is switched to signal-handoffs=true, sync=false and
counted by name. Runs until EOS, an error, or SECONDS (then stops by time). Prints one
JSON object on stdout:
  {"sinks": {NAME: {"buffers": N, "keyframes": K, "first_key": bool|null,
                    "first_pts": ns|null, "last_pts": ns|null, "first_at": s|null}},
   "eos": bool, "error": str|null, "warnings": [str], "timed_out": bool, "elapsed": s}
Exit status 0 unless the pipeline could not be built.
(`gst-launch-1.0 -v ... fakesink silent=false` drops and duplicates messages; this does not.)
"""
import json
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    limit = float(sys.argv[1])
    Gst.init(None)
    try:
        pipeline = Gst.parse_launch(sys.argv[2])
    except GLib.Error as e:
        print(json.dumps({"error": "parse: " + str(e)}))
        return 2

    start = time.monotonic()
    lock = threading.Lock()
    stats = {}

    def on_handoff(sink, buf, pad, name):
        now = time.monotonic() - start
        key = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else None
        with lock:
            s = stats[name]
            if s["buffers"] == 0:
                s["first_key"] = key
                s["first_pts"] = pts
                s["first_at"] = round(now, 3)
            s["buffers"] += 1
            if key:
                s["keyframes"] += 1
            if pts is not None:
                s["last_pts"] = pts

    it = pipeline.iterate_recurse()
    sinks = []
    while True:
        res, el = it.next()
        if res == Gst.IteratorResult.OK:
            if el.get_factory() and el.get_factory().get_name() == "fakesink":
                sinks.append(el)
        elif res == Gst.IteratorResult.RESYNC:
            it.resync()
            sinks = []
        else:
            break
    for el in sinks:
        name = el.get_name()
        stats[name] = {"buffers": 0, "keyframes": 0, "first_key": None,
                       "first_pts": None, "last_pts": None, "first_at": None}
        el.set_property("signal-handoffs", True)
        el.set_property("sync", False)
        el.connect("handoff", on_handoff, name)

    result = {"eos": False, "error": None, "warnings": [], "timed_out": False}
    loop = GLib.MainLoop()
    bus = pipeline.get_bus()
    bus.add_signal_watch()

    def on_message(_bus, msg):
        if msg.type == Gst.MessageType.EOS:
            result["eos"] = True
            loop.quit()
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            result["error"] = "%s (%s)" % (err.message, dbg)
            loop.quit()
        elif msg.type == Gst.MessageType.WARNING:
            err, dbg = msg.parse_warning()
            result["warnings"].append("%.3f s: %s (%s)" % (
                time.monotonic() - start, err.message, dbg))

    bus.connect("message", on_message)

    def on_timeout():
        result["timed_out"] = True
        loop.quit()
        return False

    GLib.timeout_add(int(limit * 1000), on_timeout)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    with lock:
        result["sinks"] = stats
    result["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
