//! `toolgraph bench`'s memory figures: peak resident memory of one execution of N no-op
//! calls, for several N, so that the bytes per call show whether memory grows linearly.
//!
//! Each N is measured in a fresh child process (the bench runs its own binary again with
//! the hidden `--memory-probe N`), so one size's peak never hides another's. The probe
//! reads the kernel's high-water mark of resident memory (`VmHWM` in `/proc/self/status`)
//! before it builds the batch and after the execution: the figure is the whole process,
//! runtime and tools included; bytes per call are taken above the first reading. Linux only:
//! elsewhere the figures are left out with a note.
//!
//! Nothing here asserts: it prints figures.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::json;
use toolgraph_core::ParallelExecutorConfig;
use toolgraph_engine::workload;

use crate::Outcome;
use crate::bench::Figure;
use crate::out::{errln, outln};

/// Where Linux reports a process's memory.
const STATUS: &str = "/proc/self/status";

/// What one probe child reports, as one JSON line on its standard output.
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    calls: usize,
    /// High-water mark before the batch was built (runtime, tools, executor).
    baseline_kib: u64,
    /// High-water mark after the execution.
    peak_kib: u64,
    /// Build, plan, run and report, in seconds.
    seconds: f64,
}

/// The resident-memory high-water mark of this process, in KiB.
fn high_water_kib() -> Result<u64> {
    let status = std::fs::read_to_string(STATUS).with_context(|| format!("reading {STATUS}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .with_context(|| format!("no VmHWM line in {STATUS}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse()
        .with_context(|| format!("VmHWM is not a number of kB: {line:?}"))
}

/// The child's side (`toolgraph bench --memory-probe N`): one execution of `n` no-op calls
/// (the fan-out of the per-call figure, under its configuration), then one JSON line.
pub async fn probe(n: usize) -> Result<Outcome> {
    let ex = crate::bench::executor(ParallelExecutorConfig {
        max_parallel_calls: 1024,
        ..Default::default()
    })?;
    let baseline_kib = high_water_kib()?;
    let start = Instant::now();
    let batch = workload::fan_out(n, "noop", json!({}));
    let result = ex
        .execute_parallel(batch)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let peak_kib = high_water_kib()?;
    anyhow::ensure!(
        result.success && result.results.len() == n,
        "no-op fan-out failed: {:?}",
        result.errors.first()
    );
    drop(result);
    let probe = Probe {
        calls: n,
        baseline_kib,
        peak_kib,
        seconds,
    };
    outln!("{}", serde_json::to_string(&probe)?)?;
    Ok(Outcome::Success)
}

/// Runs the probe for `n` calls in a fresh child process.
fn probe_in_child(n: usize) -> Result<Probe> {
    let exe = std::env::current_exe().context("finding the toolgraph binary to re-run")?;
    let out = std::process::Command::new(&exe)
        .args(["bench", "--memory-probe", &n.to_string()])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} bench --memory-probe {n}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "memory probe for {n} calls failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the memory probe printed no figures")?;
    serde_json::from_str(line).with_context(|| format!("reading the memory probe's line {line:?}"))
}

/// Peak memory and bytes per call for each size in `sizes` (none when `sizes` is empty).
pub async fn figures(sizes: &[usize]) -> Result<Vec<Figure>> {
    if sizes.is_empty() {
        return Ok(Vec::new());
    }
    if std::fs::metadata(STATUS).is_err() {
        errln!("bench: peak memory left out: {STATUS} is not readable (Linux only)");
        return Ok(Vec::new());
    }
    let mut figures = Vec::new();
    for &n in sizes {
        let p = tokio::task::spawn_blocking(move || probe_in_child(n)).await??;
        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_call = p.peak_kib.saturating_sub(p.baseline_kib) as f64 * 1024.0 / n.max(1) as f64;
        figures.push(Figure {
            name: format!("peak memory, one execution of {n} no-op calls"),
            value: mib(p.peak_kib),
            unit: "MiB",
            target: (n == 1_000_000).then(|| "≤ 600 MiB".into()),
            note: format!(
                "VmHWM of a fresh process; {:.1} MiB before the batch, run in {:.2} s",
                mib(p.baseline_kib),
                p.seconds
            ),
        });
        figures.push(Figure {
            name: format!("memory per call, {n} no-op calls"),
            value: per_call,
            unit: "B",
            target: None,
            note: "peak above the pre-batch mark, ÷ calls: flat when linear".into(),
        });
    }
    Ok(figures)
}
