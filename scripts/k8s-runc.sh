#!/bin/sh
# runc as the test cluster's containerd calls it, with one change: a container's oom_score_adj is never set
# below this process's own. The kubelet asks for -998 (pod sandboxes) and -997 (Guaranteed pods), and lowering
# it needs CAP_SYS_RESOURCE, which this project's sandboxed machines do not grant even to root: runc then fails
# with "failed to update /proc/self/oom_score_adj: Permission denied". Everything else is runc untouched.
# A real node needs none of this (docs/kubernetes.md).
prev=""
for arg in "$@"; do
  if [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; then
    floor="$(cat /proc/self/oom_score_adj)"
    python3 - "$arg/config.json" "$floor" <<'PY'
import json, sys
path, floor = sys.argv[1], int(sys.argv[2])
spec = json.load(open(path))
proc = spec.get("process") or {}
if proc.get("oomScoreAdj", floor) < floor:
    proc["oomScoreAdj"] = floor
    with open(path, "w") as f:
        json.dump(spec, f)
PY
  fi
  prev="$arg"
done
exec runc "$@"
