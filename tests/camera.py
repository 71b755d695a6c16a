#!/usr/bin/python3
"""A stand-in IP camera for the RTSP pull tests: gst-rtsp-server serving
rtsp://127.0.0.1:PORT/test.

  camera.py --port P --file F.flv      the file's H.264 and AAC, once per session, at real time
  camera.py --port P --live            a live test picture (openh264, 25 fps, GOP 1 s) and tone
  --drop PCT       drop that share of the RTP packets of every track, evenly spaced (1:
                   every 100th packet, so each run loses the same share of each track), and
                   delay 2% of them by 5-40 ms, past later ones (simulated loss and reordering)
  --user U --password W   require Digest authentication

Prints "ready" on stdout once it listens. Runs until killed.
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", required=True)
    ap.add_argument("--file")
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--drop", type=float, default=0.0)
    ap.add_argument("--user")
    ap.add_argument("--password")
    a = ap.parse_args()
    Gst.init(None)

    def pay(n, payloader):
        if a.drop > 0:
            # netsim (gst-plugins-bad) delays some packets past later ones; the probe that
            # `drop_evenly` puts on its output drops them. netsim's own random drop could
            # miss a whole track in a short run.
            return (
                f"{payloader} pt={96 + n} ! netsim drop-probability=0 "
                f"delay-probability=0.02 min-delay=5 max-delay=40 allow-reordering=true "
                f"name=pay{n}"
            )
        return f"{payloader} name=pay{n} pt={96 + n}"

    if a.file:
        launch = (
            f"( filesrc location={a.file} ! flvdemux name=d "
            f"d.video ! queue ! h264parse ! {pay(0, 'rtph264pay config-interval=-1')} "
            f"d.audio ! queue ! aacparse ! {pay(1, 'rtpmp4gpay')} )"
        )
    else:
        launch = (
            "( videotestsrc is-live=true pattern=ball ! "
            "video/x-raw,width=320,height=240,framerate=25/1 ! "
            "openh264enc gop-size=25 complexity=0 ! h264parse ! "
            f"{pay(0, 'rtph264pay config-interval=-1')} "
            "audiotestsrc is-live=true ! audio/x-raw,rate=48000,channels=1 ! "
            f"avenc_aac ! aacparse ! {pay(1, 'rtpmp4gpay')} )"
        )
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(not a.file)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_role("user")
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(
            "user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True
        )
        factory.set_permissions(perms)
    if a.drop > 0:
        factory.connect("media-configure", drop_evenly, a.drop / 100)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print("cannot listen", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


def drop_evenly(_factory, media, share):
    """Drops `share` of the packets leaving each track's netsim (`payN`), evenly spaced."""
    element = media.get_element()
    n = 0
    while (sim := element.get_by_name(f"pay{n}")) is not None:
        seen = [0]

        def probe(_pad, _info, seen=seen):
            seen[0] += 1
            # Drop packet k when k * share crosses a whole number.
            if int(seen[0] * share) != int((seen[0] - 1) * share):
                return Gst.PadProbeReturn.DROP
            return Gst.PadProbeReturn.OK

        sim.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, probe)
        n += 1


if __name__ == "__main__":
    main()
