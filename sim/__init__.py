"""The simulator and quality scoring: labelled synthetic storms (:mod:`stormeye.sim.simulator`) and
how well incidents match their truth (:mod:`stormeye.sim.quality`). Pure (no socket, file or
clock); the demo, the benches and the tests build on them. Dependency: workers -> sim -> grouping
-> core (tests/unit/test_layers.py)."""
