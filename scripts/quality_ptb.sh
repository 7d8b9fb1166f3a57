#!/usr/bin/env bash
# The PTB half of BENCHMARKS.md's quality table: ptb_zaremba_small trained to the end (13 epochs) once per
# objective, each run in outputs/quality_ptb/runs/. Then `nslm-report outputs/quality_ptb` makes the table.
#   NSLM_DATA_DIR=../shared/data bash scripts/quality_ptb.sh            # every row, one after another
#   NSLM_DATA_DIR=../shared/data bash scripts/quality_ptb.sh neg nce    # just these
# A run that is killed resumes where it stopped when the same line is started again (resume: auto).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
COMMON=(task_name=quality_ptb trainer.enable_progress_bar=false)
SMALL=experiment=ptb_zaremba_small
SAMPLED=(model.net.sparse_embedding=true loss.num_negatives=1024)

run() {  # run <name> <overrides...>
  echo "== $1: $(date -Is)"
  "$BIN/nslm-train" "${COMMON[@]}" "${@:2}"
}

ALL="full adaptive sampled_softmax_unigram sampled_softmax_log_uniform nce neg in_batch mixed finish_exact early_stop kernel"
for objective in "${@:-$ALL}"; do
  for name in $objective; do
    case $name in
      full) run full $SMALL loss=full ;;
      adaptive) run adaptive $SMALL loss=adaptive ;;  # Grave et al. 2017: exact, normalised, cheaper output layer
      sampled_softmax_unigram) run "$name" $SMALL loss=sampled_softmax sampler=unigram "${SAMPLED[@]}" ;;
      sampled_softmax_log_uniform) run "$name" $SMALL loss=sampled_softmax sampler=log_uniform "${SAMPLED[@]}" ;;
      nce) run nce $SMALL loss=nce sampler=unigram sampler.alpha=1.0 "${SAMPLED[@]}" ;;  # NCE's own noise (see ptb_nce_unigram)
      neg) run neg $SMALL loss=neg sampler=unigram "${SAMPLED[@]}" ;;                   # word2vec: unigram^0.75
      in_batch) run in_batch $SMALL loss=sampled_softmax sampler=in_batch model.net.sparse_embedding=true ;;
      mixed) run mixed $SMALL loss=sampled_softmax sampler=mixed "${SAMPLED[@]}" ;;  # Yang et al.: in-batch + k uniform
      # the bias-removal recipes (issue 14): each its own experiment file
      finish_exact) run finish_exact experiment=ptb_zaremba_small_finish_exact ;;  # in-batch 10 epochs, exact 3
      early_stop) run early_stop experiment=ptb_zaremba_small_early_stop ;;        # stop when val stalls
      kernel) run kernel $SMALL loss=sampled_softmax sampler=kernel "${SAMPLED[@]}" ;;    # proposal follows the model
      *) echo "unknown row '$name' (one of: $ALL)" >&2; exit 2 ;;
    esac
  done
done
