//! The metrics file: how a run ended in the Prometheus text exposition format, for
//! node exporter's textfile collector (or anything that reads it). Every metric is
//! a gauge named `veo_batch_...` with its unit as a suffix and a `batch` label; the
//! file is written to a temporary name beside it and renamed, so a scrape never
//! reads half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context as _;

use super::RunEnd;

/// Checks before the run that the metrics file can be written where asked: its
/// folder exists and it is not a folder itself.
pub fn check_target(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        anyhow::bail!(
            "--metrics-file `{}` is a folder, not a file",
            path.display()
        );
    }
    let dir = parent(path);
    if !dir.is_dir() {
        anyhow::bail!(
            "--metrics-file `{}`: the folder `{}` does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `end` to `path` as Prometheus text: to `<path>.tmp` first (a name the
/// textfile collector ignores, as it reads `*.prom` only), then renamed over it.
pub fn write(path: &Path, end: &RunEnd) -> anyhow::Result<()> {
    let text = render(end);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .with_context(|| format!("failed to write `{}`", tmp.display()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "failed to rename `{}` to `{}`",
            tmp.display(),
            path.display()
        )
    })
}

/// One gauge: its name, help, and samples as (extra labels, value).
struct Gauge<'a> {
    name: &'a str,
    help: &'a str,
    samples: Vec<(Option<(&'a str, &'a str)>, f64)>,
}

/// The text of the metrics file.
pub fn render(end: &RunEnd) -> String {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
    };
    let one = |value: f64| vec![(None, value)];
    let mut gauges = vec![
        Gauge {
            name: "veo_batch_jobs",
            help: "Jobs of the batch by state at the end of the run.",
            samples: end
                .jobs
                .by_state()
                .iter()
                .map(|(state, n)| (Some(("state", *state)), *n as f64))
                .collect(),
        },
        Gauge {
            name: "veo_batch_estimated_credits",
            help: "Credits the run was estimated to cost before it started.",
            samples: one(end.credits.estimated),
        },
        Gauge {
            name: "veo_batch_spent_credits",
            help: "Credits this run's submissions cost at the manifest's prices.",
            samples: one(end.credits.spent),
        },
        Gauge {
            name: "veo_batch_batch_spent_credits",
            help: "Credits the results file records for the whole batch, this run included.",
            samples: one(end.credits.batch_spent),
        },
    ];
    if let Some(measured) = end.credits.measured {
        gauges.push(Gauge {
            name: "veo_batch_measured_credits",
            help: "Credits this run cost according to the service's balance.",
            samples: one(measured),
        });
    }
    gauges.extend([
        Gauge {
            name: "veo_batch_submissions",
            help: "Tasks this run submitted to the service (each one paid for).",
            samples: one(end.submissions as f64),
        },
        Gauge {
            name: "veo_batch_retries",
            help: "Calls this run sent again after a failed try.",
            samples: one(end.retries as f64),
        },
        Gauge {
            name: "veo_batch_rate_limited_responses",
            help: "Rate-limit answers (HTTP 429) this run received.",
            samples: one(end.rate_limited as f64),
        },
        Gauge {
            name: "veo_batch_exit_code",
            help: "The exit code the run ended with (0: every job succeeded).",
            samples: one(f64::from(end.exit.code)),
        },
        Gauge {
            name: "veo_batch_start_timestamp_seconds",
            help: "When the run started, in seconds since the Unix epoch.",
            samples: one(secs(end.started)),
        },
        Gauge {
            name: "veo_batch_end_timestamp_seconds",
            help: "When the run ended, in seconds since the Unix epoch.",
            samples: one(secs(end.ended)),
        },
        Gauge {
            name: "veo_batch_duration_seconds",
            help: "How long the run took.",
            samples: one(end.duration_seconds),
        },
    ]);
    let batch = escape_label(&end.batch);
    let mut out = String::new();
    for g in gauges {
        let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
        let _ = writeln!(out, "# TYPE {} gauge", g.name);
        for (label, value) in g.samples {
            let extra = label.map_or_else(String::new, |(k, v)| {
                format!(",{k}=\"{}\"", escape_label(v))
            });
            let _ = writeln!(
                out,
                "{}{{batch=\"{batch}\"{extra}}} {}",
                g.name,
                number(value)
            );
        }
    }
    out
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: Go's float syntax, with the format's spellings of the specials.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}
