"""What this environment has that the lock does not pin: run by `make upgrade-check` in a venv
that installed the newest releases pyproject's ranges allow, it lists each package whose
version differs from requirements.lock (and those the lock does not have), Pipecat first.

    python .ci/lock_drift.py requirements.lock
"""

from __future__ import annotations

import sys
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def locked(path: Path) -> dict[str, str]:
    """name -> pinned version, for the pins whose markers hold here."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonicalize_name(requirement.name)] = str(requirement.specifier).removeprefix("==")
    return pins


def main() -> None:
    pins = locked(Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
    here = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    skip = {"pip", "setuptools", "exotel-voice-agent"}
    changed = sorted((name for name in here if name not in skip and here[name] != pins.get(name)),
                     key=lambda name: (name != "pipecat-ai", name))
    print(f"newest allowed vs {sys.argv[1] if len(sys.argv) > 1 else 'requirements.lock'}: "
          f"{len(changed)} package(s) differ")
    for name in changed:
        print(f"  {name}: {pins.get(name, 'not in the lock')} -> {here[name]}")
    gone = sorted(set(pins) - set(here))
    for name in gone:
        print(f"  {name}: {pins[name]} -> no longer needed")


if __name__ == "__main__":
    main()
