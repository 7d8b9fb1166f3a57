#!/usr/bin/env bash
# The synthetic half of BENCHMARKS.md's quality table: each objective on data=synthetic, in
# outputs/quality_synthetic/runs/; then `nslm-report outputs/quality_synthetic` makes the table.
#   bash scripts/quality_synthetic.sh 10k              # V = 10k: synthetic_10k / synthetic_10k_sampled
#   bash scripts/quality_synthetic.sh 100k             # V = 100k: the same models, a few minutes each
#   bash scripts/quality_synthetic.sh 10k full nce     # just these objectives
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
size=${1:?give 10k or 100k}
shift
case $size in
  10k) FULL=(experiment=synthetic_10k); SAMPLED=(experiment=synthetic_10k_sampled)
       ADAPTIVE=(experiment=synthetic_10k_adaptive) ;;
  # V = 100k: every objective gets about the same few minutes: 2 epochs sampled, 100 steps of exact softmax
  100k) FULL=(experiment=synthetic_10k data.vocab_size=100000 trainer.max_epochs=1 +trainer.limit_train_batches=100)
        SAMPLED=(experiment=synthetic_10k_sampled data.vocab_size=100000 trainer.max_epochs=2)
        # adaptive softmax: exact like full, cheaper per step; up to 2 epochs within the same ~7 minutes
        ADAPTIVE=(experiment=synthetic_10k_adaptive data.vocab_size=100000 trainer.max_epochs=2
                  +trainer.max_time=00:00:07:00) ;;
  *) echo "size must be 10k or 100k, got '$size'" >&2; exit 2 ;;
esac
FULL+=(task_name=quality_synthetic trainer.enable_progress_bar=false)
SAMPLED+=(task_name=quality_synthetic trainer.enable_progress_bar=false)
ADAPTIVE+=(task_name=quality_synthetic trainer.enable_progress_bar=false)

for name in "${@:-full adaptive sampled_softmax_unigram sampled_softmax_log_uniform nce neg in_batch}"; do
  for objective in $name; do
    echo "== $size $objective: $(date -Is)"
    case $objective in
      full) "$BIN/nslm-train" "${FULL[@]}" ;;
      adaptive) "$BIN/nslm-train" "${ADAPTIVE[@]}" ;;
      sampled_softmax_unigram) "$BIN/nslm-train" "${SAMPLED[@]}" ;;
      sampled_softmax_log_uniform) "$BIN/nslm-train" "${SAMPLED[@]}" sampler=log_uniform ;;
      nce) "$BIN/nslm-train" "${SAMPLED[@]}" loss=nce sampler.alpha=1.0 ;;
      neg) "$BIN/nslm-train" "${SAMPLED[@]}" loss=neg ;;
      in_batch) "$BIN/nslm-train" "${SAMPLED[@]}" sampler=in_batch ;;
      *) echo "unknown objective '$objective'" >&2; exit 2 ;;
    esac
  done
done
