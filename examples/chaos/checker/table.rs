//! The report rendered as markdown tables: the faults injected, the
//! operations checked, and each violation with its excerpt and the seed.

use std::fmt::Write as _;

use crate::checker::Report;
use crate::history::Micros;

impl Report {
    /// The summary as markdown tables; `seed` is the run's, for replay.
    pub fn table(&self, seed: u64) -> String {
        let mut out = String::new();
        let ms = |us: Micros| us as f64 / 1000.0;
        let _ = writeln!(out, "### Faults injected (seed {seed})\n");
        let _ = writeln!(out, "| fault | count |\n|---|---:|");
        for (kind, n) in &self.faults {
            let _ = writeln!(out, "| {kind} | {n} |");
        }
        let total: u64 = self.faults.values().sum();
        let _ = writeln!(out, "| **total** | {total} |");

        let _ = writeln!(out, "\n### Operations checked\n");
        let _ = writeln!(
            out,
            "| reads | count | stale | failed (loader) | max ms |\n|---|---:|---:|---:|---:|"
        );
        for (mode, c) in &self.reads {
            let _ = writeln!(
                out,
                "| {mode} | {} | {} | {} ({}) | {:.3} |",
                c.reads,
                c.stale,
                c.failed,
                c.loader_failed,
                ms(c.max_latency)
            );
        }
        let _ = writeln!(out, "\n| writes | count |\n|---|---:|");
        for (outcome, n) in &self.writes {
            let _ = writeln!(out, "| {outcome} | {n} |");
        }
        let _ = writeln!(
            out,
            "\n| saves | count |\n|---|---:|\n| accepted | {} |\n| refused | {} |",
            self.saves.0, self.saves.1
        );

        let _ = writeln!(out, "\n### Violations\n");
        if self.ok() {
            let _ = writeln!(out, "None.");
            return out;
        }
        let _ = writeln!(out, "| violation | count |\n|---|---:|");
        for (kind, n) in &self.violation_counts {
            let _ = writeln!(out, "| {kind} | {n} |");
        }
        for v in &self.violations {
            let _ = writeln!(
                out,
                "\n#### {} at {:.3} ms\n\n{}\n\n```",
                v.kind,
                ms(v.at),
                v.message
            );
            for line in &v.excerpt {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "```\n\nreplay: --seed {seed}");
        }
        out
    }
}
