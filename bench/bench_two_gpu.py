"""Inversion and editing scaled apart: the inversion service on one GPU, the
editor on another, against one S3 store; and both on one GPU for comparison.

    python bench/bench_two_gpu.py --out docs/two-gpu.md     # full size, needs 2 GPUs
    python bench/bench_two_gpu.py --smoke                   # tiny models on the CPU

Each service runs as its own process (``python -m pix2video.servers.<name>``),
as deployed. Workload: editing sessions stream already-inverted clips while,
in the "with inversion" phases, a client pushes a stream of new clips through
the inversion service. Reported per layout: editor frames per second (all
sessions) and the p95 of the gap between consecutive frames a client
receives, editing alone and with inversion running.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench"), str(ROOT / "tests")]

from pix2video.video import make_sample_frames, write_video  # noqa: E402
from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(port: int, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service on port {port} exited:\n{log.read_text()[-3000:]}")
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"service on port {port} not serving after {timeout} s")


@contextlib.contextmanager
def services(model: str, store: dict, devices: dict, workdir: Path, extra: dict):
    """Starts depth, caption, inversion and editor processes; yields their ports."""
    ports = {n: free_port() for n in ("depth", "caption", "inversion", "editor")}
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    common = ["--host", "127.0.0.1", "--model", model, "--home", str(workdir / "home"), "--grace-seconds", "2"]
    store_flags = [f"--{k.replace('_', '-')}={v}" for k, v in store.items()]
    try:
        for name in ("depth", "caption", "inversion", "editor"):
            flags = [*common, "--port", str(ports[name]), "--device", devices[name]]
            if name in ("inversion", "editor"):
                flags += store_flags
            if name == "inversion":
                flags += [
                    "--depth-address",
                    f"127.0.0.1:{ports['depth']}",
                    "--caption-address",
                    f"127.0.0.1:{ports['caption']}",
                ]
            flags += extra.get(name, [])
            log = workdir / f"{name}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", f"pix2video.servers.{name}", *flags],
                stdout=open(log, "wb"),
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(
                        [str(ROOT / "services"), str(ROOT / "clients"), os.environ.get("PYTHONPATH", "")]
                    ),
                },
            )
            procs.append((proc, log, ports[name]))
        for proc, log, port in procs:
            wait_serving(port, proc, log)
        yield ports
    finally:
        for proc, _, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def make_clips(folder: Path, count: int, frames: int, size: int, offset: int) -> list[Path]:
    clips = []
    for i in range(count):
        path = folder / f"clip{offset + i}.mp4"
        imgs = make_sample_frames(frames, size, size)
        # Shift hues per clip so every clip is a new video (no cache hits).
        imgs = [np.roll(f, shift=(offset + i) * 7, axis=2).copy() for f in imgs]
        write_video(path, imgs, fps=24)
        clips.append(path)
    return clips


def edit_phase(client: Pix2VideoClient, video_ids: list[str], options: EditOptions):
    """All sessions at once; returns (frames/s, p95 gap in s).

    frames/s = every frame all sessions received / (last frame - sessions
    opened). Frames of a wavefront arrive in bursts of W, one burst per step
    count of ticks, so a rate over a few bursts depends on where the window
    cuts them; over a whole edit of many bursts it does not."""
    arrivals: dict[int, list[float]] = {}

    def run(k, vid):
        times = arrivals.setdefault(k, [])
        for _ in client.edit(vid, "a crochet swan on the lake", options, encoding="jpeg"):
            times.append(time.perf_counter())

    threads = [threading.Thread(target=run, args=(k, v)) for k, v in enumerate(video_ids)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frames = sum(len(t) for t in arrivals.values())
    span = max(t[-1] for t in arrivals.values()) - start
    gaps = np.concatenate([np.diff([start, *t]) for t in arrivals.values()])
    return frames / span, float(np.percentile(gaps, 95))


def inversion_stream(client: Pix2VideoClient, clips: list[Path], options: InversionOptions):
    """Pushes clips through inversion, one after another, until stopped; each
    round over the clips uses a new source prompt, so no request is a cache
    hit. Returns (stop function -> clips inverted, frames inverted so far)."""
    stop = threading.Event()
    done = [0]

    def loop():
        for round_ in itertools.count():
            for clip in clips:
                if stop.is_set():
                    return
                try:
                    client.invert(clip, dataclasses.replace(options, source_prompt=f"{options.source_prompt} {round_}"))
                except Exception:  # noqa: BLE001 - the channel closes under a call at the end
                    if stop.is_set():
                        return
                    raise
                done[0] += 1

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def finish():
        stop.set()
        return done[0]

    return finish


T0 = time.perf_counter()


def progress(msg: str) -> None:
    """One line to stderr with the seconds since start (a cut-off run still shows how far it got)."""
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


def run_layout(name, model, store, devices, workdir, clips_edit, clips_inv, inv_options, edit_options, sessions):
    rows = {}
    progress(f"{name}: starting services")
    with services(model, store, devices, workdir / name, {}) as ports:
        progress(f"{name}: services serving")
        client = Pix2VideoClient(f"127.0.0.1:{ports['inversion']}", f"127.0.0.1:{ports['editor']}", timeout=None)
        ids = [client.invert(c, inv_options).video_id for c in clips_edit[:sessions]]
        progress(f"{name}: {len(ids)} clips inverted for editing")
        edit_phase(client, ids[:1], edit_options)  # warm every code path once
        progress(f"{name}: warm-up edit done")
        rows["alone"] = edit_phase(client, ids, edit_options)
        progress(f"{name}: alone {rows['alone']}")
        finish = inversion_stream(client, clips_inv, inv_options)
        time.sleep(1.0)  # let inversion get going before the sessions start
        rows["with inversion"] = edit_phase(client, ids, edit_options)
        rows["clips inverted meanwhile"] = finish()
        progress(f"{name}: with inversion {rows['with inversion']}, {rows['clips inverted meanwhile']} clips inverted")
        # Alone again: the first phase can carry warm-up effects (clocks, caches).
        rows["alone, again"] = edit_phase(client, ids, edit_options)
        progress(f"{name}: alone again {rows['alone, again']}")
        client.close()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--sessions", type=int, default=2)
    p.add_argument("--frames", type=int, default=96, help="frames per edited clip (many bursts of W)")
    p.add_argument("--width", type=int, default=8, help="frames in flight per session")
    p.add_argument("--only-split", action="store_true", help="skip the shared-GPU layout")
    p.add_argument("--only-shared", action="store_true", help="skip the split layout (run the layouts in two calls)")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pix2video-2gpu-"))
    from pix2video.models.tiny import build_tiny_model_set

    tiny = build_tiny_model_set(work / "tiny")
    if args.smoke:
        model, size, steps, frames = str(tiny), 64, 4, 6
        layouts = {"cpu (smoke)": dict(depth="cpu", caption="cpu", inversion="cpu", editor="cpu")}
    else:
        import torch
        from full_size import save_random_model_set

        n = torch.cuda.device_count()
        gpu = torch.cuda.get_device_name(0)
        model = str(save_random_model_set(work / "random-sd2-depth", tiny))
        progress(f"{n} GPUs ({gpu}); random full-size model set saved")
        size, steps, frames = 512, 50, args.frames
        layouts = {}
        if n >= 2 and not args.only_shared:
            layouts["split: inversion+depth on GPU 0, editor on GPU 1"] = dict(
                depth="cuda:0", caption="cpu", inversion="cuda:0", editor="cuda:1"
            )
        if not (args.only_split and n >= 2):
            layouts["shared: everything on GPU 0"] = dict(
                depth="cuda:0", caption="cpu", inversion="cuda:0", editor="cuda:0"
            )
    clips_edit = make_clips(work, args.sessions, frames, size, 0)
    clips_inv = make_clips(work, 4, min(frames, 32), size, 100)  # cycled with new prompts: never runs dry
    inv_options = InversionOptions(width=size, height=size, num_steps=steps, source_prompt="a lake")
    edit_options = EditOptions(frames_in_flight=args.width)

    try:
        from s3server import running_s3_server, weed_binary

        weed_binary()
        s3 = running_s3_server(work / "s3")
    except Exception as exc:  # noqa: BLE001 - no weed binary: a shared local folder instead
        print(f"no S3 server ({exc}); using a shared local store", file=sys.stderr)
        s3 = None
    results = {}
    with s3 if s3 is not None else contextlib.nullcontext() as s3s:
        progress(f"store: S3 (SeaweedFS) at {s3s.endpoint}" if s3s is not None else "store: shared local folder")
        for i, (name, devices) in enumerate(layouts.items()):
            if s3s is not None:
                store = dict(
                    store="s3",
                    s3_endpoint=s3s.endpoint,
                    s3_bucket=s3s.bucket,
                    s3_access_key=s3s.access_key,
                    s3_secret_key=s3s.secret_key,
                    s3_prefix=f"layout{i}",
                )
            else:
                store = dict(store="local", store_dir=str(work / f"store{i}"))
            results[name] = run_layout(
                f"layout{i}",
                model,
                store,
                devices,
                work,
                clips_edit,
                clips_inv,
                inv_options,
                edit_options,
                args.sessions,
            )
            print(name, results[name], flush=True)

    gpu_name = "cpu" if args.smoke else gpu
    store = "S3 (SeaweedFS, local process)" if s3 is not None else "shared local folder"
    lines = [
        "# Inversion and editing on separate GPUs",
        "",
        f"- {gpu_name}; {datetime.date.today().isoformat()}; store: {store}",
        f"- {size}x{size}, {steps} steps, {args.sessions} editing sessions of {frames} frames, W={args.width} each; "
        "inversion stream: 32-frame clips, one after another for the whole phase"
        " (each round with a new source prompt, so never a cache hit)",
        "- fps: frames all sessions received / seconds from opening the sessions to the last frame (whole edits, "
        "so the wavefront's bursts of W frames do not skew it); p95 gap: 95th percentile of the time between "
        "consecutive frames of a session (from its opening)",
        "",
        "| layout | editing alone, before / after: fps | p95 gap (s) | with inversion: fps | p95 gap (s)"
        " | change in fps (vs the better alone) | clips inverted meanwhile |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        (a_fps, a_p95), (w_fps, w_p95), (b_fps, b_p95) = r["alone"], r["with inversion"], r["alone, again"]
        base = max(a_fps, b_fps)  # the better of the two runs alone, the stricter comparison
        lines.append(
            f"| {name} | {a_fps:.2f} / {b_fps:.2f} | {a_p95:.3f} / {b_p95:.3f} | {w_fps:.2f} | {w_p95:.3f} | "
            f"{100 * (w_fps / base - 1):+.1f}% | {r['clips inverted meanwhile']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
