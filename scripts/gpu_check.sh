#!/usr/bin/env bash
# The GPU half of BENCHMARKS.md: nslm-bench on CUDA (bf16 autocast) and real 1-epoch PTB runs of the
# main objectives on one GPU, plus a DDP run through nslm's strategy on NCCL (one rank: the only
# multi-rank check a single-GPU machine allows). Writes everything into ${OUT:-outputs/gpu_check}.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
PY=${PY:-python3}
if ! $PY -c "import hydra, omegaconf" 2>/dev/null && [ -d .whl ]; then  # a machine without the registry
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src:.:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 NSLM_CACHE_DIR=/tmp/nslm-cache WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
$PY -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/machine.txt"

train() {  # train <name> <overrides...>: one PTB epoch on the GPU, bf16-mixed
  local name=$1; shift
  $PY -m nslm.train experiment=ptb_example trainer=gpu trainer.precision=bf16-mixed trainer.max_epochs=1 \
    trainer.enable_progress_bar=false logger=[] print_config=false task_name=gpu_check resume=false \
    "hydra.run.dir=/tmp/gpu_runs/$name" "$@" > "/tmp/gpu_runs_$name.log" 2>&1
  local rc=$?
  $PY - "$name" "$rc" >> "$OUT/train_runs.jsonl" <<'PYEOF'
import json, sys
name, rc = sys.argv[1], int(sys.argv[2])
try:
    r = json.load(open(f"/tmp/gpu_runs/{name}/results.json"))
    keep = ("status", "val/ppl", "test/ppl", "train/tokens_per_sec", "train/median_step_seconds", "wall_seconds")
    print(json.dumps({"run": name, "rc": rc, **{k: r.get(k) for k in keep}}))
except Exception as err:
    print(json.dumps({"run": name, "rc": rc, "error": str(err), "log": open(f"/tmp/gpu_runs_{name}.log").read()[-1500:]}))
PYEOF
}
train full loss=full
train full_plain loss=full loss.chunked=false
train adaptive loss=adaptive
train sampled_softmax_unigram loss=sampled_softmax sampler=unigram loss.num_negatives=1024 model.net.sparse_embedding=true
train nce_unigram loss=nce sampler=unigram sampler.alpha=1.0 loss.num_negatives=1024 model.net.sparse_embedding=true
train in_batch loss=sampled_softmax sampler=in_batch model.net.sparse_embedding=true
train ddp_nccl_1rank trainer=ddp trainer.devices=1 trainer.precision=bf16-mixed loss=sampled_softmax sampler=unigram \
  model.net.sparse_embedding=true +trainer.limit_train_batches=200
$PY -m nslm.bench.cli --device cuda --vocab-sizes 10000,100000,1000000 --ks 1024 --objectives sampled_softmax,nce \
  --samplers unigram,in_batch --rounds 3 --trainer-steps 100 --steps 10 --out /tmp/gpu_bench > "$OUT/bench.log" 2>&1
cp /tmp/gpu_bench/*/bench.md /tmp/gpu_bench/*/bench.json "$OUT/" 2>/dev/null
tail -n 3 "$OUT/bench.log"
cat "$OUT/train_runs.jsonl"
