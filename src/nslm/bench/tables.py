"""`nslm-bench`'s markdown: the headline checks, then one table per vocabulary size."""

from __future__ import annotations

from nslm.run_record import negatives_label


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{1000 * seconds:,.1f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def headline(report: dict) -> list[str]:
    lines = []
    check = report["trainer_vs_bare"]
    rounds = ", ".join(f"{r['speed_ratio']:.3f}" for r in check["rounds"])
    lines.append(
        f"- nslm exact-softmax step (Lightning Trainer) vs the bare PyTorch loop at V={check['vocab_size']:,}: "
        f"speed ratio **{check['median_speed_ratio']:.3f}** (median of rounds {rounds}; 1.0 = as fast)"
    )
    largest = max(row["vocab_size"] for row in report["rows"])
    headline_row = (largest, "sampled_softmax", "unigram", 1024)
    for row in report["rows"]:
        if (row["vocab_size"], row["objective"], row["sampler"], row["k"]) == headline_row:
            lines.append(
                f"- sampled softmax (unigram, k=1024) vs exact softmax at V={largest:,}: "
                f"**{row['vs_full']:.1f}x** tokens/s"
            )
    return lines


def ddp_table(rows: list[dict]) -> list[str]:
    lines = [
        "",
        f"DDP, {rows[0]['ranks']} ranks (median step of a real fit; bytes each rank sends per step for the "
        "embedding tables: row all_gather measured for `sparse`, dense all-reduce for `dense`)",
        "",
        "| V | objective | sampler | k | sync | ms/step | tokens/s (all ranks) | MB sent/step/rank | "
        "dense all-reduce MB | step vs smallest V |",
        "|---:|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    smallest = min(row["vocab_size"] for row in rows)
    base = {(r["objective"], r["sampler"], r["k"], r["sync"]): r["median_step_s"] for r in rows
            if r["vocab_size"] == smallest}  # fmt: skip
    for row in rows:
        reference = base.get((row["objective"], row["sampler"], row["k"], row["sync"]))
        k = negatives_label(row["sampler"], row["k"]) or ""
        lines.append(
            f"| {row['vocab_size']:,} | {row['objective']} | {row['sampler'] or ''} | {k} | "
            f"{row['sync']} | {_ms(row['median_step_s'])} | {row['tokens_per_sec']:,.0f} | "
            f"{row['bytes_sent_per_step'] / 1e6:,.2f} | {row['dense_allreduce_bytes_per_step'] / 1e6:,.1f} | "
            f"{_ratio(row['median_step_s'] / reference if reference else None)} |"
        )
    return lines


def markdown_report(report: dict) -> str:
    machine = report["machine"]
    where = machine.get("gpu") or f"{machine['cpu']}, {machine['cores']} cores, {machine['threads']} torch threads"
    lines = [
        f"nslm-bench, {report['date']}, {where}, torch {machine['torch']}, device {report['device']}"
        f"{', bf16 autocast' if report['bf16_autocast'] else ', fp32'}; {report['seconds']:.0f} s",
        f"command: `{report['command']}`",
        f"model: {report['model']}",
    ]
    if "ddp_rows" in report:
        return "\n".join([*lines, *ddp_table(report["ddp_rows"])]) + "\n"
    lines += ["", *headline(report)]
    memory_columns = ["peak RSS MB", "step memory MB"] + (["peak CUDA MB"] if report["device"] == "cuda" else [])
    for vocab_size in dict.fromkeys(row["vocab_size"] for row in report["rows"]):
        lines += [
            "",
            f"V = {vocab_size:,} (median step; split: LSTM fwd+bwd, output loss fwd+bwd, sampling, optimizer in ms)",
            "",
            "| objective | sampler | k | tokens/s | vs full | vs bare | LSTM | loss | sampling | optimizer | "
            + " | ".join(memory_columns)
            + " |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(memory_columns),
        ]
        for row in report["rows"]:
            if row["vocab_size"] != vocab_size:
                continue
            split = row.get("split_s", {})
            k = negatives_label(row["sampler"], row["k"]) or ""
            memory = [f"{row['peak_rss_mb']:,.0f}", f"{row['step_memory_mb']:,.0f}"]
            memory += [f"{row['peak_cuda_mb']:,.0f}"] if "peak_cuda_mb" in row else []
            lines.append(
                f"| {row['objective']} | {row['sampler'] or ''} | {k} | {row['tokens_per_sec']:,.0f} | "
                f"{_ratio(row['vs_full'])} | {_ratio(row['vs_bare'])} | {_ms(split.get('lstm'))} | "
                f"{_ms(split.get('loss'))} | {_ms(split.get('sampling'))} | {_ms(split.get('optimizer'))} | "
                + " | ".join(memory)
                + " |"
            )
    return "\n".join(lines) + "\n"
