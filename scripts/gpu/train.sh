#!/usr/bin/env bash
# Train the cascade on a GPU machine from a pack, then put the results in $OUT (docs/gpu-training.md).
#
#   bash scripts/gpu/train.sh [--config YAML] [--minutes M] [--set KEY=VALUE ...] [--resume RUN_DIR]
#
#   --config YAML     training config (default configs/train/cascade.yaml; not with --resume)
#   --minutes M       wall-clock budget of the training loop (default 8); the running epoch is finished
#   --set KEY=VALUE   a config override passed to `augmentor train`, e.g. batch_size=32 (repeatable)
#   --resume RUN_DIR  continue a run folder that is still on this machine (its saved config wins)
#
# Environment: OUT (required: the folder that comes back), AUGMENTOR_PACK (default pack),
# AUGMENTOR_DEVICE (default cuda), AUGMENTOR_RUNS (default runs/gpu), PYTHON (default python3).
set -euo pipefail

usage() { sed -n '4,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "train.sh: $*" >&2; exit 2; }

config=configs/train/cascade.yaml
minutes=8
resume=""
overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) config=${2:?--config needs a value}; shift 2 ;;
    --minutes) minutes=${2:?--minutes needs a value}; shift 2 ;;
    --set) overrides+=(--set "${2:?--set needs KEY=VALUE}"); shift 2 ;;
    --resume) resume=${2:?--resume needs a value}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
done
[[ -z "$resume" || ${#overrides[@]} -eq 0 ]] || die "--resume takes the run's saved config: no --set"
[[ -n "${OUT:-}" ]] || die "set OUT to the folder whose files come back"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

pack=${AUGMENTOR_PACK:-pack}
device=${AUGMENTOR_DEVICE:-cuda}
runs=${AUGMENTOR_RUNS:-runs/gpu}
python=${PYTHON:-python3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TQDM_MININTERVAL=${TQDM_MININTERVAL:-30}  # a progress line every 30 s, not a flood in train.log

machine_info() {
  echo "== $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi || echo "(no nvidia-smi)"
  "$python" -c '
import sys, torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"cudnn {torch.backends.cudnn.version()}, cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
'
}

main() {
  machine_info
  [[ -f "$pack/faces.parquet" && -f "$pack/identity.safetensors" ]] ||
    die "no pack at $pack: build it with \`augmentor pack --data runs/celeba --out pack\` and carry 'pack'"
  du -h "$pack"/*
  local run_dir status=0
  if [[ -n "$resume" ]]; then
    [[ -f "$resume/train_config.json" ]] || die "$resume is not a run folder on this machine"
    # The saved config wins on resume; only the time budget and the device belong to this call.
    "$python" -c '
import json, sys
path, minutes, device = sys.argv[1], float(sys.argv[2]), sys.argv[3]
cfg = json.load(open(path))
cfg.update(max_minutes=minutes, device=device)
json.dump(cfg, open(path, "w"), indent=2)
' "$resume/train_config.json" "$minutes" "$device"
    run_dir=$resume
    "$python" -m augmentor.cli -v train --resume "$run_dir" || status=$?
  else
    local parent
    parent="$runs/$(date -u +%Y%m%d-%H%M%S)"  # a fresh parent: its one run folder is this call's
    "$python" -m augmentor.cli -v train --data "$pack" --config "$config" --device "$device" --out "$parent" \
      --set "loss.identity_weights=$pack/identity.safetensors" --set "max_minutes=$minutes" "${overrides[@]}" || status=$?
    run_dir=$(find "$parent" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | head -n 1)
  fi
  if [[ -n "$run_dir" && -d "$run_dir/checkpoint" ]]; then
    echo "== collecting $run_dir into $OUT"
    "$python" scripts/gpu/collect.py "$run_dir" "$OUT" || status=$((status ? status : 1))
  else
    echo "train.sh: no checkpoint to collect (training exit status $status)" >&2
    status=$((status ? status : 1))
  fi
  return "$status"
}

main 2>&1 | tee "$OUT/train.log"
