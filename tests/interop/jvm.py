"""Apache Kafka's Java client, tools and Streams for the tests: tests/java's Maven module,
built once per test run (`mvn package dependency:build-classpath`) into tests/java/target.

Maven keeps what it fetched in its ordinary local repository (~/.m2 unless MAVEN_OPTS or
settings say otherwise), so only the first run on a machine downloads (about 40 s cold,
plugins included); a run whose pom.xml and sources are older than the last build reuses it.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

import pytest

JAVA_DIR = pathlib.Path(__file__).resolve().parents[1] / "java"
TARGET = JAVA_DIR / "target"
CLASSPATH_FILE = TARGET / "classpath.txt"
JAR = TARGET / "client-tests-0.jar"
BUILD_TIMEOUT_S = 600  # a cold fetch takes about 40 s; a slow mirror or a loaded machine more
# A small heap, the serial collector and the C1 compiler alone: these JVMs live seconds, on a
# 2-core machine shared with three broker processes.
JVM_FLAGS = ["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


@dataclass(frozen=True)
class JavaKit:
    """A built tests/java: `java -cp classpath` runs its programs and Kafka's tools."""
    java: str
    classpath: str

    def command(self, main: str, args: list[str]) -> list[str]:
        return [self.java, *JVM_FLAGS, "-cp", self.classpath, main, *args]

    def run(self, main: str, args: list[str], *, timeout_s: float, input_text: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run `main` to its end; with check, a non-zero exit fails the test with its output."""
        proc = subprocess.run(self.command(main, args), capture_output=True, text=True,
                              timeout=timeout_s, input=input_text,
                              stdin=None if input_text is not None else subprocess.DEVNULL)
        if check and proc.returncode != 0:
            pytest.fail(f"{main} {' '.join(args)} exited {proc.returncode}:\n"
                        f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}", pytrace=False)
        return proc

    def program(self, name: str, args: list[str], *, timeout_s: float, check: bool = True) -> list[dict]:
        """One of tests/java's programs (chronik.clients.<name>); its JSON lines."""
        proc = self.run(f"chronik.clients.{name}", args, timeout_s=timeout_s, check=check)
        return json_lines(proc.stdout)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _stale() -> bool:
    if not (JAR.exists() and CLASSPATH_FILE.exists()):
        return True
    built = CLASSPATH_FILE.stat().st_mtime
    sources = [JAVA_DIR / "pom.xml", *(JAVA_DIR / "src").rglob("*")]
    if any(p.stat().st_mtime > built for p in sources if p.is_file()):
        return True
    return not all(os.path.exists(p) for p in CLASSPATH_FILE.read_text().strip().split(os.pathsep))


def build() -> JavaKit:
    """tests/java built (Maven fetches Kafka's jars the first time). Skips the calling test
    (with the reason) where java or mvn is missing; fails it if the build fails."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        pytest.skip(f"the Java client tests need java and mvn on PATH; found java={java}, mvn={mvn}")
    if _stale():
        proc = subprocess.run(
            [mvn, "-q", "-B", "-Dstyle.color=never", "package", "dependency:build-classpath",
             f"-Dmdep.outputFile={CLASSPATH_FILE}"],
            cwd=JAVA_DIR, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
            stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.fail(f"mvn package in {JAVA_DIR} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    classpath = os.pathsep.join([str(JAR), CLASSPATH_FILE.read_text().strip()])
    return JavaKit(java, classpath)
