#!/usr/bin/env python3
"""Load the mock upstream directly, through nginx as a plain reverse proxy, and through Switchyard, in
one run, and report side by side.

Standard library only. Started by scripts/bench, which builds the release binary and installs wrk and
nginx. Each scenario runs wrk against the mock upstream (the ceiling), nginx `proxy_pass` with
keep-alive to the same mock (the floor for any relay), and the gateway with a real key; CPU time and
RSS come from /proc. A last scenario holds 10,000 slow streams open through the gateway to measure
memory and descriptor use. Numbers drift between runs on a shared machine: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LUA = r"""
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,"p50":%d,"p99":%d,"p999":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"""

SMALL = json.dumps({"model": "gpt-5.1", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]})
STREAM = json.dumps({"model": "gpt-5.1", "stream": True, "mock": {"chunks": 200},
                     "messages": [{"role": "user", "content": "Hello!"}]})

ANTHROPIC_DIRECT = json.dumps({"model": "claude-up", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]})
TRANSLATED = json.dumps({"model": "claude-up", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello!"}]})

SCENARIOS = [
    # name, path direct, body direct, path through the gateway, body through the gateway, connections
    ("small non-streaming, 64 connections", "/v1/chat/completions", SMALL, "/v1/chat/completions", SMALL, 64),
    ("small non-streaming, 1 connection", "/v1/chat/completions", SMALL, "/v1/chat/completions", SMALL, 1),
    ("200-chunk stream, 64 connections", "/v1/chat/completions", STREAM, "/v1/chat/completions", STREAM, 64),
    # An OpenAI-format request to a model served by an Anthropic provider, against the same call made
    # directly in Anthropic's format.
    ("translated OpenAI → Anthropic, 64 connections", "/v1/messages", ANTHROPIC_DIRECT, "/v1/chat/completions", TRANSLATED, 64),
]


def proc_stat(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user+system), current RSS and peak RSS in bytes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024
    return cpu, rss, hwm


def start(args: list[str], workdir: Path, name: str) -> tuple[subprocess.Popen, str]:
    out = workdir / f"{name}.out"
    popen = subprocess.Popen(args, cwd=workdir, stdout=out.open("w"), stderr=(workdir / f"{name}.err").open("w"))
    deadline = time.time() + 30
    while time.time() < deadline:
        m = re.search(r"listening on (http://\S+)", out.read_text())
        if m:
            return popen, m.group(1)
        if popen.poll() is not None:
            sys.exit(f"{name} exited: {(workdir / f'{name}.err').read_text()}")
        time.sleep(0.05)
    sys.exit(f"{name} did not start")


NGINX_CONF = """
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(work: Path, mock_url: str) -> tuple[subprocess.Popen, str] | None:
    """nginx as a plain reverse proxy to the mock, one worker (the gateway's CPU budget is the same machine)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("  (nginx not installed: skipping the reverse-proxy baseline)", file=sys.stderr)
        return None
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, mock_port=mock_url.rsplit(":", 1)[1], port=port))
    popen = subprocess.Popen([nginx, "-p", str(work), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=(work / "nginx.start.err").open("w"))
    deadline = time.time() + 10
    import socket

    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return popen, f"http://127.0.0.1:{port}"
        except OSError:
            if popen.poll() is not None:
                sys.exit(f"nginx exited: {(work / 'nginx.start.err').read_text()}")
            time.sleep(0.05)
    sys.exit("nginx did not start")


def tree_stat(pid: int) -> tuple[float, int]:
    """CPU seconds and summed RSS of a process and its children (nginx master + workers)."""
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    cpu, rss = 0.0, 0
    for p in pids:
        try:
            c, r, _ = proc_stat(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        cpu, rss = cpu + c, rss + r
    return cpu, rss


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wrk(url: str, body: str, key: str, connections: int, duration: int, script: Path, timeout: int = 10) -> dict:
    threads = min(2, connections)
    env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": key}
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", f"{timeout}s", "-s", str(script), url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    m = re.search(r"BENCH_RESULT (\{.*\})", out)
    if not m:
        sys.exit(f"wrk produced no result:\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


SLOW_STREAM = json.dumps({"model": "gpt-5.1", "stream": True, "mock": {"chunks": 10, "chunk_delay_ms": 1000},
                          "messages": [{"role": "user", "content": "Hello!"}]})


def many_streams(gateway: subprocess.Popen, url: str, key: str, script: Path, streams: int) -> dict:
    """Holds `streams` slow streams open at once (ten events a second apart) and watches memory and fds."""
    import threading

    _, rss_before, _ = proc_stat(gateway.pid)
    fds_before = fd_count(gateway.pid)
    peak = {"fds": fds_before}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                peak["fds"] = max(peak["fds"], fd_count(gateway.pid))
            except OSError:
                pass
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = wrk(url + "/v1/chat/completions", SLOW_STREAM, key, streams, 25, script, timeout=60)
    finally:
        stop.set()
        watcher.join()
    time.sleep(3)  # let closed connections drain
    if gateway.poll() is not None:
        log = Path(gateway.args[-1]).parent / "gateway.err"
        sys.exit(f"the gateway exited ({gateway.returncode}) during the slow-stream scenario:\n" + (log.read_text()[-3000:] if log.exists() else ""))
    _, _, hwm = proc_stat(gateway.pid)
    fds_after = fd_count(gateway.pid)
    print(f"  {streams} slow streams: {r['requests']} completed, errors {r['socket_errors'] + r['status_errors']}, "
          f"peak RSS {hwm / 2**20:.0f} MB, fds {fds_before} → {peak['fds']} → {fds_after}", file=sys.stderr)
    return {"streams": streams, "completed": r["requests"], "errors": r["socket_errors"] + r["status_errors"], "rss_before": rss_before,
            "hwm": hwm, "fds_before": fds_before, "fds_peak": peak["fds"], "fds_after": fds_after}


def machine() -> str:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores, {cpu.group(1) if cpu else 'unknown CPU'}, "
            f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB; "
            f"commit {commit or 'unknown'}{' (with local changes)' if dirty else ''}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--quick", action="store_true", help="3 s per run instead of 10 s")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    ap.add_argument("--streams", type=int, default=10_000, help="concurrent slow streams for the memory scenario")
    ap.add_argument("--skip-many", action="store_true", help="skip the many-slow-streams scenario")
    args = ap.parse_args()
    # Thousands of sockets on each of three processes: raise the descriptor limit (inherited).
    # A gateway holds two descriptors per stream (client and upstream): root may raise the hard limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200_000, 200_000))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    duration = 3 if args.quick else 10

    with tempfile.TemporaryDirectory(prefix="switchyard-bench-") as tmp:
        work = Path(tmp)
        script = work / "bench.lua"
        script.write_text(LUA)
        mock, mock_url = start([args.bin, "mock-upstream", "--port", "0"], work, "mock")
        config = work / "bench.yaml"
        config.write_text(f"""
listen: "127.0.0.1:0"
database: "sqlite:{work}/bench.db"
providers:
  - {{name: upstream, type: openai, base_url: "{mock_url}/v1", api_key: "bench", max_connections: 20000}}
  - {{name: anthropic, type: anthropic, base_url: "{mock_url}", api_key: "bench"}}
models:
  - {{name: gpt-5.1, provider: upstream, multiplier: 1}}
  - {{name: claude-up, provider: anthropic, multiplier: 1}}
log: {{level: info, format: json}}
# Limits and credit metering on, as users run them: limits high enough never to trip, credits that
# never run out; every request reserves before dispatch and settles after, with a usage row.
plans:
  - {{name: bench, requests_per_minute: 100000000, requests_per_day: 1000000000, concurrent_requests: 100000, tokens_per_minute: 1000000000000}}
pricing:
  input_tiers: [{{max_input_tokens: 16000, credits: 1}}, {{credits: 10}}]
""")
        key = json.loads(subprocess.run([args.bin, "keys", "create", "--config", str(config), "--name", "bench", "--user", "bench@example.com", "--json"],
                                        capture_output=True, text=True, check=True).stdout)["key"]
        subprocess.run([args.bin, "credits", "grant", "bench@example.com", "1000000000", "--config", str(config)], capture_output=True, check=True)
        gateway, gateway_url = start([args.bin, "serve", "--config", str(config)], work, "gateway")
        nginx = start_nginx(work, mock_url)
        many = None
        try:
            # Warm up every path (connection pools, caches).
            wrk(mock_url + "/v1/chat/completions", SMALL, "", 16, 2, script)
            wrk(gateway_url + "/v1/chat/completions", SMALL, key, 16, 2, script)
            if nginx:
                wrk(nginx[1] + "/v1/chat/completions", SMALL, "", 16, 2, script)
            rows = []
            for name, direct_path, direct_body, path, body, conns in SCENARIOS:
                direct = wrk(mock_url + direct_path, direct_body, "", conns, duration, script)
                proxied = None
                if nginx:
                    n0, _ = tree_stat(nginx[0].pid)
                    proxied = wrk(nginx[1] + direct_path, direct_body, "", conns, duration, script)
                    n1, nrss = tree_stat(nginx[0].pid)
                    proxied["cpu"] = (n1 - n0) / max(1, proxied["requests"]) * 1000
                    proxied["rss"] = nrss
                cpu0, _, _ = proc_stat(gateway.pid)
                through = wrk(gateway_url + path, body, key, conns, duration, script)
                cpu1, rss, hwm = proc_stat(gateway.pid)
                rows.append((name, direct, proxied, through, (cpu1 - cpu0) / max(1, through["requests"]) * 1000, rss, hwm))
                print(f"  {name}: direct {direct['rps']:.0f}/s, nginx {proxied['rps'] if proxied else 0:.0f}/s, "
                      f"through gateway {through['rps']:.0f}/s", file=sys.stderr)
            if not args.skip_many:
                many = many_streams(gateway, gateway_url, key, script, args.streams)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(60)
            if nginx:
                nginx[0].send_signal(signal.SIGQUIT)
                nginx[0].wait(30)
            mock.send_signal(signal.SIGTERM)
            mock.wait(60)

    lines = [
        f"Machine: {machine()}.",
        f"wrk, {duration} s per run, 2 threads; mock upstream, nginx (1 worker) and gateway on the same machine, not pinned.",
        "",
        "| scenario | target | requests/s | p50 | p99 | p99.9 | errors | relay CPU s / 1k req | relay RSS (peak) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ms = lambda us: f"{us / 1000:.2f} ms"
    errors = lambda r: r["socket_errors"] + r["status_errors"]
    for name, d, n, t, cpu, rss, hwm in rows:
        lines.append(f"| {name} | direct to mock | {d['rps']:,.0f} | {ms(d['p50'])} | {ms(d['p99'])} | {ms(d['p999'])} | {errors(d)} | | |")
        if n:
            lines.append(f"| {name} | nginx reverse proxy | {n['rps']:,.0f} | {ms(n['p50'])} | {ms(n['p99'])} | {ms(n['p999'])} | {errors(n)} | {n['cpu']:.3f} | {n['rss'] / 2**20:.0f} MB |")
        lines.append(f"| {name} | through Switchyard | {t['rps']:,.0f} | {ms(t['p50'])} | {ms(t['p99'])} | {ms(t['p999'])} | {errors(t)} | {cpu:.3f} | {rss / 2**20:.0f} MB ({hwm / 2**20:.0f} MB) |")
    lines.append("")
    for name, d, n, t, *_ in rows:
        vs_nginx = f", {t['rps'] / n['rps']:.2f} × nginx (nginx adds p50 {n['p50'] - d['p50']} µs, p99 {n['p99'] - d['p99']} µs)" if n else ""
        lines.append(f"- {name}: throughput {t['rps'] / d['rps']:.2f} × direct{vs_nginx}; Switchyard adds p50 {(t['p50'] - d['p50'])} µs, p99 {(t['p99'] - d['p99'])} µs.")
    if many:
        lines.append(f"- {many['streams']:,} concurrent slow streams (one event a second) through Switchyard: {many['completed']:,} completed, "
                     f"{many['errors']} errors; gateway RSS {many['rss_before'] / 2**20:.0f} MB before, peak {many['hwm'] / 2**20:.0f} MB; "
                     f"open descriptors {many['fds_before']} before, {many['fds_peak']} at peak, {many['fds_after']} after.")
    table = "\n".join(lines)
    print(table)
    if args.write:
        doc = ROOT / "docs" / "benchmarks.md"
        text = doc.read_text()
        start_marker, end_marker = "<!-- bench:start -->", "<!-- bench:end -->"
        if start_marker not in text:
            sys.exit("docs/benchmarks.md has no bench markers")
        head, rest = text.split(start_marker, 1)
        _, tail = rest.split(end_marker, 1)
        doc.write_text(f"{head}{start_marker}\n{table}\n{end_marker}{tail}")
        print(f"wrote {doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
