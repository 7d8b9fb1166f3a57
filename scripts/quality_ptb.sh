#!/usr/bin/env bash
# The PTB half of BENCHMARKS.md's quality table: ptb_zaremba_small trained to the end (13 epochs) once per
# objective, each run in outputs/quality_ptb/runs/. Then `nslm-report outputs/quality_ptb` makes the table.
#   NSLM_DATA_DIR=../shared/data bash scripts/quality_ptb.sh            # all six, one after another
#   NSLM_DATA_DIR=../shared/data bash scripts/quality_ptb.sh neg nce    # just these
# A run that is killed resumes where it stopped when the same line is started again (resume: auto).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
COMMON=(experiment=ptb_zaremba_small task_name=quality_ptb trainer.enable_progress_bar=false)
SAMPLED=(model.net.sparse_embedding=true loss.num_negatives=1024)

run() {  # run <name> <overrides...>
  echo "== $1: $(date -Is)"
  "$BIN/nslm-train" "${COMMON[@]}" "${@:2}"
}

for objective in "${@:-full sampled_softmax_unigram sampled_softmax_log_uniform nce neg in_batch}"; do
  for name in $objective; do
    case $name in
      full) run full loss=full ;;
      sampled_softmax_unigram) run "$name" loss=sampled_softmax sampler=unigram "${SAMPLED[@]}" ;;
      sampled_softmax_log_uniform) run "$name" loss=sampled_softmax sampler=log_uniform "${SAMPLED[@]}" ;;
      nce) run nce loss=nce sampler=unigram sampler.alpha=1.0 "${SAMPLED[@]}" ;;  # NCE's own noise (see ptb_nce_unigram)
      neg) run neg loss=neg sampler=unigram "${SAMPLED[@]}" ;;                   # word2vec: unigram^0.75
      in_batch) run in_batch loss=sampled_softmax sampler=in_batch model.net.sparse_embedding=true ;;
      *) echo "unknown objective '$name' (full, sampled_softmax_unigram, sampled_softmax_log_uniform, nce, neg, in_batch)" >&2; exit 2 ;;
    esac
  done
done
