"""Reads an Autobahn fuzzingclient index.json; prints a table per case group; exits 1 on any failure."""
import collections
import json
import sys

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}

with open(sys.argv[1]) as f:
    index = json.load(f)

failed = []
groups = collections.OrderedDict()
for agent, cases in index.items():
    def key(case_id):
        return [int(p) for p in case_id.split(".")]
    for case_id in sorted(cases, key=key):
        result = cases[case_id]
        behaviour, close = result["behavior"], result["behaviorClose"]
        group = case_id.split(".")[0]
        counts = groups.setdefault(group, collections.Counter())
        counts[behaviour] += 1
        if behaviour not in ACCEPTED or close not in ACCEPTED:
            failed.append((case_id, behaviour, close))

print("| cases | OK | NON-STRICT | INFORMATIONAL | other |")
print("| --- | --- | --- | --- | --- |")
total = collections.Counter()
for group, counts in groups.items():
    other = sum(n for b, n in counts.items() if b not in ACCEPTED)
    print(f"| {group}.* | {counts['OK']} | {counts['NON-STRICT']} | {counts['INFORMATIONAL']} | {other} |")
    total.update(counts)
cases = sum(total.values())
print(f"\nautobahn: {cases} cases, {len(failed)} failed")
for case_id, behaviour, close in failed:
    print(f"  FAILED {case_id}: behaviour {behaviour}, close {close}")
print(f"autobahn: {cases - len(failed)} passed, {len(failed)} failed")
sys.exit(1 if failed or cases == 0 else 0)
