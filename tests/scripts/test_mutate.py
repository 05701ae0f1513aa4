"""scripts/mutate.py stays runnable: every mutation still applies to the code and names tests that exist.
(Running the mutations themselves is not part of CI; see the README's Development section.)"""

from __future__ import annotations

from pathlib import Path

from scripts.mutate import MUTATIONS

ROOT = Path(__file__).resolve().parents[2]


def test_every_mutation_applies_exactly_once_and_names_existing_tests():
    assert len(MUTATIONS) >= 15 and len({m.name for m in MUTATIONS}) == len(MUTATIONS)
    for m in MUTATIONS:
        text = (ROOT / m.path).read_text()
        assert text.count(m.old) == 1, f"{m.name}: its snippet occurs {text.count(m.old)} times in {m.path}"
        assert m.old != m.new
        for spec in m.tests:
            path, _, rest = spec.partition("::")
            path = path.split(" -k ")[0]
            assert (ROOT / path).is_file(), f"{m.name}: no {path}"
            if rest:
                assert f"def {rest.split('[')[0]}(" in (ROOT / path).read_text(), f"{m.name}: no test {rest}"
