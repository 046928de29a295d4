"""The Apache Kafka release relaybook embeds: a pinned version from Maven Central,
resolved once per machine into a cache under the home directory, and the Java 17+ that
runs it (see :mod:`relaybook.tooling.kafka_cluster`).

Maven is needed once, to fetch the jars (``make kafka``); Java every time. Without
either, start-up stops with one line (:class:`SettingsError`, exit 2).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from relaybook.platform.logs import get_logger
from relaybook.platform.settings import SettingsError
from relaybook.tooling.embedded import EmbeddedError

log = get_logger(__name__)

#: the Apache Kafka release run, and the logging it is given (its POM brings none)
KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
#: SLF4J 2 for the log4j binding: Kafka's POM asks for 1.7, whose callers 2.x serves
SLF4J_VERSION = "2.0.17"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>relaybook</groupId>
  <artifactId>embedded-kafka</artifactId>
  <version>{kafka}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def cache_dir() -> Path:
    """Where the jars of :data:`KAFKA_VERSION` are kept, once per machine."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "relaybook" / f"kafka-{KAFKA_VERSION}"


def java_major_version() -> int | None:
    """The major version of the ``java`` on the PATH, or None without one."""
    java = shutil.which("java")
    if java is None:
        return None
    try:
        shown = subprocess.run(  # noqa: S603 - the PATH's java, fixed arguments
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    # `openjdk version "17.0.15"`, `java version "1.8.0_392"`
    match = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """The path of ``java``; raises :class:`SettingsError` (exit 2, one line) unless it
    is Java 17 or later."""
    java = shutil.which("java")
    major = java_major_version()
    if major is None or major < 17:
        found = "no java on the PATH" if major is None else f"java {major} on the PATH"
        raise SettingsError(
            f"RELAYBOOK_EMBEDDED_BROKER=kafka needs Java 17 or later ({found}); "
            "install a JDK, or use RELAYBOOK_EMBEDDED_BROKER=tansu"
        )
    assert java is not None  # a version was read from it
    return java


def classpath() -> str:
    """The classpath of the broker, resolving the jars into :func:`cache_dir` first when
    they are not there (needs Maven, and Maven Central reachable, that one time).

    Raises :class:`SettingsError` without Java 17+ or (on the first run) Maven, and
    :class:`EmbeddedError` when Maven fails."""
    require_java()
    cache = cache_dir()
    lib = cache / "lib"
    if not (cache / "complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        # two processes starting at once (tests, `up` and the demo) resolve it once
        with (cache / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cache / "complete").exists():
                _resolve(cache)
    return f"{lib}/*"


def _resolve(cache: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SettingsError(
            "RELAYBOOK_EMBEDDED_BROKER=kafka needs Maven (mvn on the PATH) once, to fetch "
            f"Apache Kafka {KAFKA_VERSION} into {cache}; or use RELAYBOOK_EMBEDDED_BROKER=tansu"
        )
    started = time.monotonic()
    log.info("fetching Apache Kafka from Maven Central", version=KAFKA_VERSION, cache=str(cache))
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        work = Path(scratch)
        (work / "pom.xml").write_text(
            _POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
        )
        result = subprocess.run(  # noqa: S603 - the PATH's mvn, fixed arguments
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            errors = [line for line in result.stdout.splitlines() if "ERROR" in line]
            raise EmbeddedError(
                f"Maven could not fetch Apache Kafka {KAFKA_VERSION}: "
                f"{(errors or ['exit ' + str(result.returncode)])[0][:300]}"
            )
        shutil.rmtree(cache / "lib", ignore_errors=True)
        (work / "lib").rename(cache / "lib")
    (cache / "complete").write_text(KAFKA_VERSION + "\n")
    log.info("Apache Kafka fetched", seconds=round(time.monotonic() - started, 1))
