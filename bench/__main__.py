"""`make bench`: the speed figures of SPEC §8. Filled in by the hot-path work (issue 7)."""

print("No benchmarks yet: the SPEC §8 figures arrive with the hot-path work.")
