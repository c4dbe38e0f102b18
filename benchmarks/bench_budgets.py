#!/usr/bin/env python3
"""Hostile messages over the parser budgets (smimekit.cms.limits), beside ``openssl cms``.

    .venv/bin/python benchmarks/bench_budgets.py [--before] [--recipients N] [--segments N]
                                                 [--quick] [--keep DIR]

Decrypts, with the ``smimekit`` CLI and with ``openssl cms -decrypt``, the same files:

* ``one recipient``: a real AES-256-CBC message to one RSA-2048 recipient (the baseline);
* ``4,096 recipients`` / ``262,144 segments``: the largest counts the budgets let through;
* ``200,000 recipients``: the first message with 200,000 decoy RecipientInfos beside the
  real one (issue 8: 37 s and 1.35 GB before the budgets);
* ``1,000,000 segments``: its ciphertext as a million BER segments of one octet or none.

Every run is a fresh process timed from outside, process start included, with its peak
RSS from GNU ``time`` (``-`` without /usr/bin/time). With ``--before`` the smimekit CLI also
runs once more with the budget checks switched off in-process, to show what they save.
``--quick`` (a smoke test, ~5 s) skips the at-the-limit cases and goes just over each limit.
It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the hostile-message builders and the test PKI

from malformed import hostile  # noqa: E402
from malformed.cases import der_of, pkcs7_mime  # noqa: E402
from properties.pki import message, test_pki, write_pki  # noqa: E402

import smimekit  # noqa: E402
from smimekit.cms import limits  # noqa: E402

SMIMEKIT = Path(sys.executable).with_name("smimekit")
NO_BUDGETS = (
    "import sys\n"
    "from smimekit.cms import limits\n"
    "limits.check_content_info = limits.check_recipient_infos = lambda der: None\n"
    "from smimekit.cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def run(argv: list[str]) -> tuple[float, str, int, str]:
    """(wall seconds, peak RSS in MB or '-', exit status, last stderr line)."""
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists()
                                        else None)
    prefix = [gnu_time, "-f", "%M"] if gnu_time else []
    start = time.perf_counter()
    done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [line for line in done.stderr.strip().splitlines()
             if not line.startswith("Command exited with non-zero status")]
    rss = "-"
    if gnu_time and lines and lines[-1].isdigit():
        rss = f"{int(lines.pop()) / 1024:.0f}"
    return wall, rss, done.returncode, (lines[-1] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", action="store_true",
                        help="also run smimekit with the budget checks switched off")
    parser.add_argument("--recipients", type=int, default=200_000)
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true",
                        help="only the baseline and just over each limit")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it")
    args = parser.parse_args()
    if args.quick:
        args.recipients = limits.MAX_RECIPIENT_INFOS + 1
        args.segments = limits.MAX_BER_SEGMENTS + 1
    work = args.keep or Path(tempfile.mkdtemp(prefix="smimekit-bench-budgets-"))
    work.mkdir(parents=True, exist_ok=True)
    kit = test_pki()
    files = write_pki(kit, work)
    plain = message(b"The secret is 42.\r\n")
    real = der_of(smimekit.encrypt(plain, [kit["rsa"].cert], cipher=smimekit.Cipher.AES256_CBC))
    decoy = der_of(smimekit.encrypt(plain, [kit["rsa2"].cert],
                                    cipher=smimekit.Cipher.AES256_CBC))
    cases = {
        "one recipient": real,
        f"{limits.MAX_RECIPIENT_INFOS:,} recipients (limit)": hostile.many_recipient_infos(
            real, decoy, limits.MAX_RECIPIENT_INFOS - 1),
        f"{args.recipients:,} recipients": hostile.many_recipient_infos(
            real, decoy, args.recipients - 1),
        f"{limits.MAX_BER_SEGMENTS:,} segments (limit)": hostile.segmented_ciphertext(
            real, limits.MAX_BER_SEGMENTS),
        f"{args.segments:,} segments": hostile.segmented_ciphertext(real, args.segments),
    }
    if args.quick:
        cases = {k: v for k, v in cases.items() if "(limit)" not in k}
    key, cert = str(files.keys["rsa"]), str(files.certs["rsa"])
    print(f"{'input':<28} {'size':>8}  {'tool':<22} {'wall s':>7} {'peak MB':>8}  result")
    for n, (name, der) in enumerate(cases.items()):
        path = work / f"case{n}.eml"
        path.write_bytes(pkcs7_mime(der, "enveloped-data"))
        size = f"{path.stat().st_size / 1e6:.1f} MB"
        tools = {
            "smimekit decrypt": [str(SMIMEKIT), "decrypt", "--key", key, "--cert", cert,
                                 str(path), "-o", str(work / "out.eml")],
            "openssl cms -decrypt": ["openssl", "cms", "-decrypt", "-in", str(path),
                                     "-inkey", key, "-recip", cert, "-out",
                                     str(work / "out-openssl.eml")],
        }
        if args.before:
            tools["smimekit, no budgets"] = [sys.executable, "-c", NO_BUDGETS, "decrypt",
                                             "--key", key, "--cert", cert, str(path), "-o",
                                             str(work / "out-before.eml")]
        for tool, argv in tools.items():
            wall, rss, status, err = run(argv)
            limit = re.search(r"limit (MAX_\w+)", err)
            result = ("decrypted" if status == 0 else
                      f"refused, exit {status}: over {limit.group(1)}" if limit else
                      f"exit {status}: {err[:70]}")
            print(f"{name:<28} {size:>8}  {tool:<22} {wall:>7.2f} {rss:>8}  {result}",
                  flush=True)
    if args.keep is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
