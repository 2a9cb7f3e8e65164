#!/usr/bin/env python3
"""Load the mock upstream directly and through Switchyard, in one run, and report side by side.

Standard library only. Started by scripts/bench, which builds the release binary and installs wrk.
Each scenario runs wrk against the mock upstream (the ceiling) and then against the gateway with a real
key; the gateway's CPU time and RSS come from /proc. Numbers drift between runs on a shared machine:
compare the ratios within one run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


def wrk(url: str, body: str, key: str, connections: int, duration: int, script: Path) -> dict:
    threads = min(2, connections)
    env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": key}
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    m = re.search(r"BENCH_RESULT (\{.*\})", out)
    if not m:
        sys.exit(f"wrk produced no result:\n{out}")
    r = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


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
    args = ap.parse_args()
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
  - {{name: upstream, type: openai, base_url: "{mock_url}/v1", api_key: "bench"}}
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
        try:
            # Warm up both paths (connection pools, caches).
            wrk(mock_url + "/v1/chat/completions", SMALL, "", 16, 2, script)
            wrk(gateway_url + "/v1/chat/completions", SMALL, key, 16, 2, script)
            rows = []
            for name, direct_path, direct_body, path, body, conns in SCENARIOS:
                direct = wrk(mock_url + direct_path, direct_body, "", conns, duration, script)
                cpu0, _, _ = proc_stat(gateway.pid)
                through = wrk(gateway_url + path, body, key, conns, duration, script)
                cpu1, rss, hwm = proc_stat(gateway.pid)
                rows.append((name, direct, through, (cpu1 - cpu0) / max(1, through["requests"]) * 1000, rss, hwm))
                print(f"  {name}: direct {direct['rps']:.0f}/s, through gateway {through['rps']:.0f}/s", file=sys.stderr)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
            mock.send_signal(signal.SIGTERM)
            mock.wait(30)

    lines = [
        f"Machine: {machine()}.",
        f"wrk, {duration} s per run, 2 threads; mock upstream and gateway are release builds on the same machine, not pinned.",
        "",
        "| scenario | target | requests/s | p50 | p99 | p99.9 | errors | gateway CPU s / 1k req | gateway RSS (peak) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ms = lambda us: f"{us / 1000:.2f} ms"
    for name, d, t, cpu, rss, hwm in rows:
        lines.append(f"| {name} | direct to mock | {d['rps']:,.0f} | {ms(d['p50'])} | {ms(d['p99'])} | {ms(d['p999'])} | {d['socket_errors'] + d['status_errors']} | | |")
        lines.append(f"| {name} | through Switchyard | {t['rps']:,.0f} | {ms(t['p50'])} | {ms(t['p99'])} | {ms(t['p999'])} | {t['socket_errors'] + t['status_errors']} | {cpu:.3f} | {rss / 2**20:.0f} MB ({hwm / 2**20:.0f} MB) |")
    lines.append("")
    for name, d, t, *_ in rows:
        lines.append(f"- {name}: throughput ratio {t['rps'] / d['rps']:.2f} × direct; added latency p50 {(t['p50'] - d['p50'])} µs, p99 {(t['p99'] - d['p99'])} µs.")
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
