#!/usr/bin/python3
"""Serve an H.264 video file as a live RTSP stream on 127.0.0.1 (tests and demos).

Runs with the system Python (/usr/bin/python3), which has GStreamer's RTSP server through
python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/install-system-deps.sh); the project's
virtualenv does not need them. The file is sent as it is (no re-encoding), in real time. When
it ends, clients are disconnected; a client that reconnects gets it again from the start, which
is how a camera that drops its stream looks.

    /usr/bin/python3 scripts/rtsp_server.py clip.mp4 --port 8554 --path /cam1

Prints `ready rtsp://127.0.0.1:PORT/PATH` once it listens.
"""

import argparse
import signal
import sys
from pathlib import Path

DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".m4v": "qtdemux", ".ts": "tsdemux", ".mkv": "matroskademux"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="H.264 video (.mp4, .mov, .ts or .mkv)")
    parser.add_argument("--port", type=int, default=8554, help="TCP port (default 8554)")
    parser.add_argument("--path", default="/cam", help="mount path (default /cam)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args()
    if not args.file.is_file():
        print(f"error: {args.file}: file not found", file=sys.stderr)
        return 2
    demux = DEMUXERS.get(args.file.suffix.lower())
    if demux is None:
        print(f"error: {args.file}: unsupported container (use {', '.join(DEMUXERS)})", file=sys.stderr)
        return 2

    GLib, Gst, GstRtspServer = _gstreamer()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = str(args.file.resolve()).replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! {demux} ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )')
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://{args.host}:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


def _gstreamer():
    """GLib, Gst and GstRtspServer through python3-gi; without them (the project's virtualenv, or a machine without the
    Debian packages) one line saying what to install, where the import's traceback said only `No module named 'gi'`."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as exc:  # ValueError: gi without the GstRtspServer typelib
        sys.exit(f"error: GStreamer's RTSP server is not available to {sys.executable} ({exc}): run this script with "
                 "/usr/bin/python3 after `bash scripts/install-system-deps.sh` (python3-gi, gir1.2-gst-rtsp-server-1.0)")
    return GLib, Gst, GstRtspServer


if __name__ == "__main__":
    sys.exit(main())
