"""Median (min-max) per scenario and target of a bench/sfu/run.sh results file."""
import json, statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    d = json.loads(line)
    rows[(d["scenario"], d["target"])].append(d)
def cell(v):
    v = [x for x in v if x is not None]
    return f"{statistics.median(v):.3g} ({min(v):.3g}-{max(v):.3g})" if v else "-"
print("| scenario | target | runs | CPU us / forwarded media datagram | CPU % of a core | forwarded media datagrams/s | loss % | ratio to floor (median) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (sc, tg) in sorted(rows):
    r = rows[(sc, tg)]
    per = [x["cpu_us_per_forwarded"] for x in r]
    floor = [x["cpu_us_per_forwarded"] for x in rows.get((sc, "floor"), [])]
    ratio = f"{statistics.median(per) / statistics.median(floor):.2f}x" if floor and tg != "floor" else ""
    print(f"| {sc} | {tg} | {len(r)} | {cell(per)} | {cell([x['cpu_percent'] for x in r])} | "
          f"{cell([x.get('received_media_datagrams', x['received_datagrams']) / x['seconds'] for x in r])} | {cell([x['loss'] * 100 for x in r])} | {ratio} |")
