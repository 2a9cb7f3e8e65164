#!/usr/bin/env python3
"""Measures the local count_tokens estimator against a real BPE tokenizer.

Reference: Claude's legacy tokenizer (`tokenizer.json` shipped in the anthropic SDK up to 0.3x), run with
the `tokenizers` library; both fetched from PyPI into a temporary folder. The estimator is read through
the gateway's own /v1/messages/count_tokens for a model served by the built-in mock (which has no
tokenizer), so what is measured is what users get. Usage:

    .venv/bin/python scripts/measure-token-estimator.py [--bin .build/debug/switchyard]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OTHER_LANGUAGES = {
    "German": "Die Gateway-Konfiguration wird beim Start streng geprüft: ein unbekannter Schlüssel oder ein falscher Typ beendet den Prozess mit einer Meldung, die Schlüssel und Zeile nennt. " * 6,
    "French": "Le passerelle relaie chaque événement dès son arrivée, sans mise en mémoire tampon, et annule la requête amont dès que le client se déconnecte. " * 6,
    "Chinese": "网关在启动时严格检查配置：未知的键或错误的类型会使进程停止，并给出指明键和行号的消息。流式响应逐个事件转发，客户端断开时立即取消上游请求。" * 4,
    "Japanese": "ゲートウェイは各イベントを到着次第中継し、クライアントが切断すると上流のリクエストを直ちにキャンセルします。設定は起動時に厳密に検査されます。" * 4,
    "Russian": "Шлюз пересылает каждое событие по мере поступления и немедленно отменяет запрос к провайдеру, если клиент отключился. Конфигурация строго проверяется при запуске. " * 5,
}


def corpus() -> dict[str, list[str]]:
    def chunks(files, size=6000, limit=12):
        out = []
        for f in files:
            text = Path(f).read_text(errors="ignore")
            for i in range(0, len(text), size):
                piece = text[i:i + size]
                if len(piece) > 500:
                    out.append(piece)
                if len(out) >= limit:
                    return out
        return out

    return {
        "Swift code": chunks(sorted(glob.glob(str(ROOT / "Sources/**/*.swift"), recursive=True))),
        "Python code": chunks(sorted(glob.glob(str(ROOT / "tests/compat/*.py")))),
        "English prose (docs)": chunks(sorted(glob.glob(str(ROOT / "docs/*.md"))) + [str(ROOT / "README.md")]),
        "JSON": [json.dumps(json.loads(Path(f).read_text()), indent=2)[:6000] for f in sorted(glob.glob("/opt/swift-packages/**/*.json", recursive=True))[:0]]
        or [json.dumps({"messages": [{"role": "user", "content": f"item {i} with some words"} for i in range(60)]}, indent=2)],
        **{k: [v] for k, v in OTHER_LANGUAGES.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / ".build/debug/switchyard"))
    args = ap.parse_args()
    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "anthropic==0.34.0", "--no-deps", "-q", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("anthropic-0.34.0*.whl"))
        with zipfile.ZipFile(wheel) as z:
            tokenizer = Tokenizer.from_str(z.read("anthropic/tokenizer.json").decode())
        out = Path(tmp) / "gw.out"
        gw = subprocess.Popen([args.bin, "serve", "--demo", "--listen", "127.0.0.1:0"], cwd=tmp, stdout=out.open("w"), stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                text = out.read_text()
                if "demo key" in text:
                    break
                time.sleep(0.05)
            url = re.search(r"listening on (http://\S+)", text).group(1)
            key = re.search(r"demo key:\s+(\S+)", text).group(1)

            def estimate(content: str) -> int:
                body = json.dumps({"model": "mock-fast", "messages": [{"role": "user", "content": content}]}).encode()
                req = urllib.request.Request(url + "/v1/messages/count_tokens", data=body, headers={"x-api-key": key, "content-type": "application/json"})
                with urllib.request.urlopen(req) as r:
                    return json.load(r)["input_tokens"]

            base = estimate("")
            print("| text | samples | reference tokens | estimated | error |")
            print("|---|---:|---:|---:|---:|")
            for kind, texts in corpus().items():
                ref = sum(len(tokenizer.encode(t).ids) for t in texts)
                est = sum(estimate(t) - base for t in texts)
                print(f"| {kind} | {len(texts)} | {ref:,} | {est:,} | {100 * (est - ref) / ref:+.0f}% |")
        finally:
            gw.terminate()
            gw.wait()


if __name__ == "__main__":
    main()
