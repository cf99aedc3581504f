"""librdkafka's own integration tests (its tests/ test runner) against one chronik-trio node,
run by hand (too costly for the suite: building librdkafka and its ~150 test programs takes
tens of minutes on two loaded cores, see docs/compaction.md):

    .venv/bin/python -m tests.interop.librdkafka_tests [--tests 0011,0081] [--cache DIR]

librdkafka's source comes from Debian's source package (the `.orig.tar.gz` of a pinned
version, checked against its SHA-256 from the package's .dsc), fetched from the Debian
mirror apt on this machine is configured with; it is built once into the cache directory
(default ~/.cache/chronik-trio/librdkafka) and reused. Each named test runs with
`TESTS=<n> ./test-runner` in librdkafka's tests/ directory, with a test.conf naming the
node. Exit status 0 when every test passed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

from nodeharness import NodeProcess, chronik_trio_command, free_ports, node_args

VERSION = "2.14.2"
TARBALL = f"librdkafka_{VERSION}.orig.tar.gz"
SHA256 = "4d53568c13717b167d12c7b2a0fe12aeb5d6bfe02de53df5b68f86d870a81b33"
POOL_PATH = f"pool/main/libr/librdkafka/{TARBALL}"
# Only what the tests need: no TLS, SASL, zstd, curl (their libraries need not be installed).
CONFIGURE = ["--disable-ssl", "--disable-gssapi", "--disable-sasl", "--disable-zstd", "--disable-lz4-ext",
             "--disable-curl"]
# The broker version the test runner assumes (it gates features on it): 4.0 for the group config
# resource and a group's DESCRIBE_CONFIGS / ALTER_CONFIGS authorized operations, which this broker has.
KAFKA_VERSION = "4.0.0"
TEST_TIMEOUT_S = 900


def debian_mirror() -> str:
    """The first Debian archive URI apt is configured with (deb822 or one-line sources)."""
    files = sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.sources")) + \
        [pathlib.Path("/etc/apt/sources.list")]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text()
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise SystemExit("no Debian archive in apt's sources: fetch "
                     f"{POOL_PATH} by hand into the cache directory")


def fetch(cache: pathlib.Path) -> pathlib.Path:
    tarball = cache / TARBALL
    if not tarball.exists():
        url = f"{debian_mirror()}/{POOL_PATH}"
        print(f"fetching {url}", flush=True)
        with urllib.request.urlopen(url, timeout=120) as response, tempfile.NamedTemporaryFile(dir=cache, delete=False) as out:
            shutil.copyfileobj(response, out)
        os.replace(out.name, tarball)
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != SHA256:
        tarball.unlink()
        raise SystemExit(f"{TARBALL}: sha256 {digest}, expected {SHA256} (deleted)")
    return tarball


def build(cache: pathlib.Path) -> pathlib.Path:
    """librdkafka's tests/ directory with a built test-runner."""
    source = cache / f"librdkafka-{VERSION}"
    runner = source / "tests" / "test-runner"
    if runner.exists():
        return runner.parent
    tarball = fetch(cache)
    if source.exists():
        shutil.rmtree(source)
    with tarfile.open(tarball) as tar:
        top = tar.getnames()[0].split("/")[0]
        tar.extractall(cache, filter="data")
    (cache / top).rename(source)
    started = time.monotonic()
    jobs = str(os.cpu_count() or 1)
    for argv, cwd in ((["./configure", *CONFIGURE], source), (["make", "-j", jobs, "libs"], source),
                      (["make", "-j", jobs, "build"], source / "tests")):
        print(f"{' '.join(argv)} (in {cwd.name})", flush=True)
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    print(f"built librdkafka {VERSION} and its test runner in {time.monotonic() - started:.0f} s", flush=True)
    return runner.parent


def start_node(work: pathlib.Path) -> tuple[NodeProcess, str]:
    kafka_port, admin_port = free_ports(2)
    listen = f"127.0.0.1:{kafka_port}"
    node = NodeProcess(1, [*chronik_trio_command(), *node_args(
        1, listen=listen, data_dir=work / "data", admin_listen=f"127.0.0.1:{admin_port}")],
        work / "node.log", f"127.0.0.1:{admin_port}", with_parent=True)
    node.start()
    node.wait_ready(60)
    return node, listen


def run_test(tests_dir: pathlib.Path, number: str, bootstrap: str, work: pathlib.Path) -> bool:
    conf = work / "test.conf"
    conf.write_text(f"bootstrap.servers={bootstrap}\ntest.timeout.multiplier=4\n")
    libs = f"{tests_dir.parent / 'src'}:{tests_dir.parent / 'src-cpp'}"  # the libraries just built
    env = {**os.environ, "TESTS": number, "TEST_KAFKA_VERSION": KAFKA_VERSION, "RDKAFKA_TEST_CONF": str(conf),
           "LD_LIBRARY_PATH": libs}
    started = time.monotonic()
    proc = subprocess.run(["./test-runner"], cwd=tests_dir, env=env, capture_output=True, text=True,
                          timeout=TEST_TIMEOUT_S)
    (work / f"test-{number}.log").write_text(proc.stdout + proc.stderr)
    print(f"test {number}: exit {proc.returncode} in {time.monotonic() - started:.1f} s "
          f"(output: {work / f'test-{number}.log'})", flush=True)
    output = proc.stdout + proc.stderr
    print("\n".join(line for line in output.splitlines() if "SUB_TEST" in line or "PASSED" in line
                     or "FAIL" in line)[-6000:] if proc.returncode == 0 else output[-6000:])
    return proc.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default="0011", help="comma-separated test numbers (default 0011)")
    parser.add_argument("--cache", type=pathlib.Path,
                        default=pathlib.Path.home() / ".cache" / "chronik-trio" / "librdkafka")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tests_dir = build(args.cache)
    with tempfile.TemporaryDirectory(prefix="librdkafka-tests-") as tmp:
        work = pathlib.Path(tmp)
        node, bootstrap = start_node(work)
        try:
            results = {n: run_test(tests_dir, n, bootstrap, work) for n in args.tests.split(",")}
        finally:
            node.stop()
            if node.problems:
                print(f"node problems: {node.problems}\n{node.log_text()[-4000:]}")
        print(" ".join(f"{n}: {'passed' if ok else 'FAILED'}" for n, ok in results.items()))
        print(f"{sum(results.values())} passed, {len(results) - sum(results.values())} failed")
        sys.exit(0 if all(results.values()) and not node.problems else 1)


if __name__ == "__main__":
    main()
