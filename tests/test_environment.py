"""The lock file pins the whole environment, and agrees with the direct pins it was made from."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of every ``name==version`` line (extras and comments dropped)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{path.name}: {line!r} is not pinned to one exact version"
        found[normalise(match.group(1))] = match.group(3)
    return found


def test_the_lock_holds_every_direct_pin_at_its_version():
    direct, locked = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements.lock")
    no_deps = re.search(r"^NO_DEPS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    direct |= {normalise(name): version for name, version in (pin.split("==") for pin in no_deps)}
    for name, version in direct.items():
        assert name in locked, f"{name} is pinned in requirements.txt or the Makefile but missing from requirements.lock"
        # A local build label (torch's "+cpu") names the same release.
        assert locked[name].split("+")[0] == version, f"{name}: {version} asked, {locked[name]} locked; run make lock"


def test_the_lock_names_no_package_twice():
    lines = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    names = [normalise(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names))
